from .sources import DATASET_SOURCES, SourceData, SourceSplit
from .splits import few_shot, plan_splits, stratified_carve

__all__ = ["DATASET_SOURCES", "SourceData", "SourceSplit", "few_shot", "plan_splits", "stratified_carve"]


def load_source(entry):
    kind, _ = entry.source()
    return DATASET_SOURCES.get(kind)(entry)
