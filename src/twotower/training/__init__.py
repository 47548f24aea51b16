"""Training at scale: streamed input, distribution over devices and hosts, the fast loop.

Public API::

    from twotower.training import (InteractionStream, StreamConfig, DistributionConfig,
                                   apply_distribution, TrainLoop, LoopConfig, make_optimizer)
"""

from twotower.training.distribution import (DistributionConfig, apply_distribution,
                                            check_batch_size, check_embedding_dim)
from twotower.training.loop import LoopConfig, TrainLoop, make_optimizer, sparse_reason
from twotower.training.stream import (InteractionStream, Progress, StreamConfig, StreamStats,
                                      rebatch, shuffle_chunks)

__all__ = ["DistributionConfig", "InteractionStream", "LoopConfig", "Progress", "StreamConfig",
           "StreamStats", "TrainLoop", "apply_distribution", "check_batch_size",
           "check_embedding_dim", "make_optimizer", "rebatch", "shuffle_chunks", "sparse_reason"]
