"""The Keras two-tower network and its training objectives.

The query tower embeds a user id and/or pools the embeddings of the user's recent items;
the candidate tower embeds an item id; affinity is the dot product. Objectives live in
``compute_loss`` so ``model.fit`` trains any of them.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import keras_rs
from keras import ops

from twotower.models.config import ModelConfig
from twotower.models.retriever import recency_weights

#: the smallest sampling probability the log-Q correction takes, as the inputs clip it
#: (``logq``): keras-rs' default (1e-6) gave every item with fewer than rows / 1e6
#: interactions the correction of one with rows / 1e6 (on a 20M-row log, most items)
LOGQ_FLOOR = 1e-12
NEG_INF = -1e9


class TwoTowerNet(keras.Model):
    """Query tower, candidate tower and objective as one ``keras.Model``.

    Inputs (dict): ``user`` ``[B]`` int32 user indices; with a history tower also
    during training
    ``item`` ``[B]`` int32 (the target, masked out of the history so the model cannot
    copy it), ``rating`` ``[B]`` float32 in [0, 1] for ``mse``, ``logq`` ``[B]`` log
    sampling probability for ``sampled_softmax``, optionally ``weight`` ``[B]`` float32
    scaling each row's term of a per-pair loss (``ModelConfig.interaction_weights``; the
    ``l2`` penalty stays unweighted). The history tower reads the user's
    recent items from ``history`` (``[n_users, L]`` item indices + 1, 0 = padding).

    ``call`` returns ``{"query": [B, d]}`` and, outside training, ``"top_ids"`` ``[B, 10]``
    from ``keras_rs.layers.BruteForceRetrieval`` over all candidates (the tutorial's raw
    list, seen items included).
    """

    def __init__(self, n_users: int, n_items: int, config: ModelConfig,
                 history: Any = None, item_features: Any = None,
                 user_features: Any = None, target_weights: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # [n_users, L] item indices + 1 of each user's recent items (history towers only)
        self.history_table = None if history is None else ops.convert_to_tensor(history)
        # [n_users, L] float32 weight of each history entry as a multinomial target
        # (ModelConfig.interaction_weights); None: each entry 1
        self.target_weights = (None if target_weights is None
                               else ops.convert_to_tensor(target_weights, "float32"))
        self.n_users, self.n_items, self.cfg = n_users, n_items, config
        self.recency = (None if history is None or not config.recency_half_life else
                        ops.convert_to_tensor(recency_weights(np.shape(history)[1], config)))
        d = config.embedding_dim
        seed = config.seed
        self.use_id = config.query_tower in ("id", "id+history")
        self.use_history = config.query_tower in ("history", "id+history")
        init = keras.initializers.RandomUniform(-0.05, 0.05, seed=seed)
        self.user_embedding = (keras.layers.Embedding(n_users, d, embeddings_initializer=init,
                                                      name="user_embedding")
                               if self.use_id else None)
        self.history_embedding = (
            keras.layers.Embedding(n_items + 1, d, name="history_embedding",
                                   embeddings_initializer=keras.initializers.RandomUniform(
                                       -0.05, 0.05, seed=seed + 1))
            if self.use_history else None)
        self.item_embedding = keras.layers.Embedding(
            n_items, d, name="item_embedding",
            embeddings_initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed=seed + 2))
        self.item_bias = (keras.layers.Embedding(n_items, 1, name="item_bias",
                                                 embeddings_initializer="zeros")
                          if config.item_bias else None)
        # side features: [n_items, f] / [n_users, g] fixed sparse matrices (as SparseRows:
        # each row's active features and weights), learned [f, d] / [g, d] tables
        self.item_features = SparseRows.of(item_features)
        self.user_features = SparseRows.of(user_features, by_row=True)
        self.item_feature_embedding = self.item_feature_bias = None
        self.user_feature_embedding = None
        if self.item_features is not None:
            f = int(np.shape(item_features)[1])
            self.item_feature_embedding = self.add_weight(
                shape=(f, d), name="item_feature_embedding",
                initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed=seed + 4))
            if config.item_bias:
                self.item_feature_bias = self.add_weight(shape=(f, 1), name="item_feature_bias",
                                                         initializer="zeros")
        if self.user_features is not None:
            self.user_feature_embedding = self.add_weight(
                shape=(int(np.shape(user_features)[1]), d), name="user_feature_embedding",
                initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed=seed + 5))
        self.retrieval = keras_rs.layers.BruteForceRetrieval(k=min(10, n_items),
                                                             return_scores=False)
        self.hard_negative_mining = (keras_rs.layers.HardNegativeMining(config.hard_negatives)
                                     if config.hard_negatives else None)
        self.logq = keras_rs.layers.SamplingProbabilityCorrection(epsilon=LOGQ_FLOOR)
        self.dropout_seed = keras.random.SeedGenerator(seed + 3)

    def build(self, input_shape: Any = None) -> None:
        if self.user_embedding is not None:
            self.user_embedding.build((None,))
        if self.history_embedding is not None:
            self.history_embedding.build((None, None))
        self.item_embedding.build((None,))
        if self.item_bias is not None:
            self.item_bias.build((None,))
        self.retrieval.update_candidates(ops.zeros((self.n_items, self.cfg.embedding_dim)))
        self.built = True

    def query(self, inputs: dict[str, Any], training: bool = False) -> Any:
        return self._query(inputs, training)[0]

    def _query(self, inputs: dict[str, Any], training: bool = False) -> tuple[Any, Any]:
        """The query ``[B, d]`` and, in multinomial training, the multi-hot ``[B, n_items]``
        of the history items that survived dropout (else None)."""
        parts = []
        kept = None
        if self.use_id:
            parts.append(self.user_embedding(inputs["user"]))
        if self.user_features is not None:
            parts.append(self.user_features.rows_times(inputs["user"],
                                                       self.user_feature_embedding))
        if self.use_history:
            hist = ops.take(self.history_table, inputs["user"], axis=0)
            mask = ops.cast(hist > 0, "float32")
            if self.recency is not None:
                mask = mask * self.recency  # [L] weights, column 0 = the latest item
            if training and "item" in inputs:
                target = ops.expand_dims(ops.cast(inputs["item"], hist.dtype) + 1, -1)
                mask = mask * ops.cast(hist != target, "float32")
            if training and self.cfg.history_dropout > 0:
                keep = keras.random.uniform(ops.shape(mask), seed=self.dropout_seed)
                mask = mask * ops.cast(keep >= self.cfg.history_dropout, "float32")
            count = ops.maximum(ops.sum(mask, axis=1, keepdims=True), 1.0)
            if training and self.cfg.objective == "multinomial":
                # multi-hot [B, n_items] @ table: cheaper than gathering [B, L, d] for the
                # long histories of per-user training, same sum
                dense = multi_hot(hist, mask, self.n_items + 1)
                pooled = ops.matmul(dense, self.history_embedding.embeddings)
                kept = dense[:, 1:]
            else:
                emb = self.history_embedding(hist) * ops.expand_dims(mask, -1)
                pooled = ops.sum(emb, axis=1)
            pooled = pooled / pool_norm(count, self.cfg.pooling)
            if self.cfg.history_activation == "tanh":
                pooled = ops.tanh(pooled)
            parts.append(pooled)
        q = parts[0]
        for p in parts[1:]:
            q = q + p
        return q, kept

    def call(self, inputs: dict[str, Any], training: bool = False) -> dict[str, Any]:
        q, kept = self._query(inputs, training=training)
        out = {"query": q}
        if kept is not None:
            out["kept"] = kept
        if not training:
            out["top_ids"] = self.retrieval(q)
        return out

    def item_table(self) -> Any:
        """``[n_items, d]`` candidate embeddings: id embedding + item feature embeddings."""
        table = self.item_embedding.embeddings
        if self.item_features is not None:
            table = table + self.item_features.times(self.item_feature_embedding)
        return table

    def item_bias_vector(self) -> Any:
        """``[n_items]`` learned item bias (+ its feature part); None without item_bias."""
        if self.item_bias is None:
            return None
        bias = ops.reshape(self.item_bias.embeddings, (-1,))
        if self.item_feature_bias is not None:
            bias = bias + ops.reshape(self.item_features.times(self.item_feature_bias), (-1,))
        return bias

    def user_table(self) -> Any:
        """``[n_users, d]`` per-user part of the query (id + user feature embeddings), or
        None when the query has neither."""
        table = self.user_embedding.embeddings if self.user_embedding is not None else None
        if self.user_features is not None:
            part = self.user_features.times(self.user_feature_embedding)
            table = part if table is None else table + part
        return table

    def sync_retrieval(self) -> None:
        """Point the BruteForceRetrieval layer at the current candidate embeddings."""
        # A copy: sharing the buffer makes JAX donate it twice in predict().
        self.retrieval.update_candidates(np.array(self.item_table()))

    def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None,
                     sample_weight: Any = None, training: bool = True) -> Any:
        cfg = self.cfg
        q = y_pred["query"]
        if cfg.objective == "multinomial":
            return self._multinomial_loss(x["user"], q, y_pred.get("kept"))
        item = x["item"]
        cand = (self.item_embedding(item) if self.item_features is None
                else ops.take(self.item_table(), item, axis=0))
        # each row's weight (ModelConfig.interaction_weights: mean positive weight 1); none: 1
        weigh = ((lambda per_row: ops.mean(per_row * x["weight"])) if "weight" in x
                 else ops.mean)
        if cfg.objective == "mse":
            score = ops.sum(q * cand, axis=1)
            loss = weigh(ops.square(x["rating"] - score))
        elif cfg.objective == "softmax":
            logits = ops.matmul(q, ops.transpose(self.item_table()))
            logits = logits / cfg.temperature
            loss = weigh(ops.sparse_categorical_crossentropy(item, logits, from_logits=True))
        elif cfg.objective == "sampled_softmax":
            logits = ops.matmul(q, ops.transpose(cand)) / cfg.temperature
            logits = self.logq(logits, ops.expand_dims(ops.exp(x["logq"]), 0))
            # keras-rs 0.4.0's RemoveAccidentalHits is a no-op (keras-rs#206): mask here.
            logits = mask_accidental_hits(logits, item)
            labels = ops.eye(ops.shape(item)[0], dtype="float32")
            if self.hard_negative_mining is not None:
                logits, labels = self.hard_negative_mining(logits, labels)
            loss = weigh(ops.categorical_crossentropy(labels, logits, from_logits=True))
        else:  # bpr: one uniformly sampled negative per positive
            negative = keras.random.randint(ops.shape(item), 0, self.n_items,
                                            seed=self.dropout_seed)
            neg = ops.take(self.item_table(), negative, axis=0)
            diff = (ops.sum(q * cand, axis=1) - ops.sum(q * neg, axis=1)) / cfg.temperature
            loss = -weigh(ops.log_sigmoid(diff))
        if cfg.l2 > 0:
            reg = ops.mean(ops.sum(ops.square(q), axis=1)) + ops.mean(ops.sum(ops.square(cand),
                                                                              axis=1))
            loss = loss + cfg.l2 * reg
        return loss


    def _multinomial_loss(self, users: Any, q: Any, kept: Any = None) -> Any:
        """Per-user multinomial log-likelihood of the user's (``history_length`` most recent)
        items over the catalogue (Mult-DAE with a linear encoder = the history tower,
        decoder = the item table)."""
        cfg = self.cfg
        logits = ops.matmul(q, ops.transpose(self.item_table()))
        if self.item_bias is not None:
            logits = logits + ops.expand_dims(self.item_bias_vector(), 0)
        logits = logits / cfg.temperature
        logp = ops.log_softmax(logits, axis=-1)
        # the user's history_length most recent items (+ 1, 0 = padding): a table as wide as
        # the longest history would not fit for large logs (162k x 33k ids for MovieLens 25M)
        tgt = ops.take(self.history_table, users, axis=0)
        mask = ops.cast(tgt > 0, "float32")
        if self.target_weights is not None:  # each pair's weight (0 at padding)
            mask = ops.take(self.target_weights, users, axis=0)
        ll = ops.take_along_axis(logp, ops.maximum(tgt - 1, 0), axis=1) * mask
        if cfg.multinomial_targets == "dropped" and kept is not None:
            # only the items the query did not see: predict the missing, not the given
            seen = ops.take_along_axis(kept, ops.maximum(tgt - 1, 0), axis=1)
            ll = ll * ops.cast(seen <= 0, "float32")
        per_user = ops.sum(ll, axis=1)
        if cfg.user_weighting != "sum":
            # users with many items dominate a summed loss; the metrics average over users
            n = ops.maximum(ops.sum(mask, axis=1), 1.0)
            per_user = per_user / (n if cfg.user_weighting == "mean" else ops.sqrt(n))
        loss = -ops.mean(per_user)
        if cfg.l2 > 0:
            # A Gaussian prior on the tables: lambda * ||W||^2 over the whole data set is
            # lambda / n_users per user, independent of batch size and data set size.
            reg = ops.sum(ops.square(self.item_embedding.embeddings))
            for w in (self.item_feature_embedding, self.user_feature_embedding):
                if w is not None:
                    reg = reg + ops.sum(ops.square(w))
            if self.history_embedding is not None:
                reg = reg + ops.sum(ops.square(self.history_embedding.embeddings))
            if self.user_embedding is not None:
                reg = reg + ops.sum(ops.square(self.user_embedding.embeddings))
            loss = loss + cfg.l2 * reg / self.n_users
        return loss


class SparseRows:
    """A fixed sparse ``[n_rows, n_features]`` matrix on the device, as its non-zero
    entries (row, feature, weight) in row order: ``times(table)`` is ``matrix @ table``
    as a gather and a segment sum, ``O(non-zeros x d)``, never the dense matrix (an id-like
    feature column, 50,000 brands over 100,000 items, made it 20 GB)."""

    def __init__(self, matrix: Any, by_row: bool = False) -> None:
        from twotower.models.features import as_features
        csr = as_features(matrix)
        m = csr.tocoo()  # sorted by row (CSR order)
        self.shape = m.shape
        self.rows = ops.convert_to_tensor(m.row.astype(np.int32))
        self.cols = ops.convert_to_tensor(m.col.astype(np.int32))
        self.weights = ops.convert_to_tensor(m.data.astype(np.float32)[:, None])
        self.padded = None
        if by_row:
            # [n_rows, w] feature indices and weights (0 = padding), w the most features
            # a row has: a batch's rows are gathered without the whole product
            counts = np.diff(csr.indptr)
            width = max(int(counts.max(initial=0)), 1)
            slot = np.arange(csr.nnz) - np.repeat(csr.indptr[:-1], counts)
            cols = np.zeros((m.shape[0], width), dtype=np.int32)
            weights = np.zeros((m.shape[0], width), dtype=np.float32)
            cols[m.row, slot] = m.col
            weights[m.row, slot] = m.data
            self.padded = (ops.convert_to_tensor(cols), ops.convert_to_tensor(weights))

    @classmethod
    def of(cls, matrix: Any, by_row: bool = False) -> "SparseRows | None":
        """None for no matrix or one without features."""
        if matrix is None or not np.shape(matrix)[1]:
            return None
        return cls(matrix, by_row)

    def rows_times(self, ids: Any, table: Any) -> Any:
        """``[B, k]``: rows ``ids`` ``[B]`` of this matrix times ``table`` (``by_row``)."""
        cols, weights = (ops.take(t, ids, axis=0) for t in self.padded)
        picked = ops.take(table, cols, axis=0) * ops.expand_dims(weights, -1)
        return ops.sum(picked, axis=1)

    def times(self, table: Any) -> Any:
        """``[n_rows, k]``: this matrix times ``table`` ``[n_features, k]``."""
        picked = ops.take(table, self.cols, axis=0) * self.weights
        return ops.segment_sum(picked, self.rows, num_segments=self.shape[0], sorted=True)


def multi_hot(idx: Any, weight: Any, width: int) -> Any:
    """``[B, width]`` float32 with ``weight[b, j]`` added at column ``idx[b, j]``."""
    b, length = ops.shape(idx)
    rows = ops.repeat(ops.expand_dims(ops.arange(b, dtype=idx.dtype), 1), length, axis=1)
    coords = ops.reshape(ops.stack([rows, idx], axis=-1), (-1, 2))
    return ops.scatter(coords, ops.reshape(weight, (-1,)), (b, width))


def pool_norm(count: Any, pooling: str) -> Any:
    """Divisor of the (weighted) summed history embeddings, given the (weighted) item count:
    ``count`` (mean), ``sqrt(count)``
    (``sqrt``: the L2-normalised multi-hot input of Mult-DAE) or 1 (``sum``)."""
    if pooling == "mean":
        return count
    if pooling == "sqrt":
        return ops.sqrt(count)
    return ops.ones_like(count)


def mask_accidental_hits(logits: Any, items: Any) -> Any:
    """In-batch logits ``[B, B]`` with off-diagonal entries whose item equals the row's
    positive item set to a large negative value (the fix keras-rs 0.4.0 lacks)."""
    same = ops.expand_dims(items, 1) == ops.expand_dims(items, 0)
    eye = ops.eye(ops.shape(items)[0], dtype="bool")
    return ops.where(ops.logical_and(same, ops.logical_not(eye)), NEG_INF, logits)
