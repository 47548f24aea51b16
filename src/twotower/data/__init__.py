"""Interactions, id vocabularies, readers, the MovieLens loader and splits."""

from twotower.data.interactions import Interactions
from twotower.data.movielens import load_movielens_100k, read_movielens_100k
from twotower.data.readers import read_interactions, read_item_info, write_interactions
from twotower.data.splits import (Split, global_temporal_split, held_out_users_split,
                                  make_split, random_split, temporal_split)
from twotower.data.vocabulary import Vocabulary

__all__ = ["Interactions", "Split", "Vocabulary", "global_temporal_split", "held_out_users_split",
           "load_movielens_100k",
           "make_split", "random_split", "read_interactions", "read_item_info",
           "read_movielens_100k", "temporal_split", "write_interactions"]
