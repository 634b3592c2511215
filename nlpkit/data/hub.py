"""Hugging Face dataset names as inputs, read from the local `datasets` cache only (nothing is downloaded).

Syntax: `NAME[/CONFIG][:SPLIT]`, where NAME is a hub dataset (`imdb`) or `OWNER/DATASET` (`nyu-mll/glue`):
`glue/sst2:validation`, `nyu-mll/glue/sst2:test`, `imdb:train`. With two segments (`a/b`) the cache decides:
`b` is a config of `a` unless the cache holds a dataset `a/b` itself. Without `:SPLIT` the split is the
option's own (`--train` → train, `--validation` → validation, `--test` and `evaluate --data` → test); a caller
that names no option must name the split, so a hub name never silently reads the train split.

`open_source` consults this module only for inputs that do not exist locally: a local path always wins, and a
Windows drive path (`C:\\data`) or a name with a data-file suffix is never taken for a hub name.
"""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from nlpkit.errors import NlpkitError

DEFAULT_SPLITS = {"--train": "train", "--validation": "validation", "--test": "test", "--data": "test"}
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SPLIT = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass
class HubInput:
    """A cached hub dataset, config and split, with its `datasets` builder (reads the cache's Arrow files)."""

    repo: str
    config: str
    split: str
    builder: object = field(repr=False)

    def streaming(self):
        """The split as a `datasets` IterableDataset (bounded memory, read from the cache)."""
        return self.builder.as_streaming_dataset(split=self.split)

    def class_names(self, column):
        """Names of a ClassLabel column (index -> name), or None for any other column."""
        feature = (self.builder.info.features or {}).get(column)
        return list(feature.names) if type(feature).__name__ == "ClassLabel" else None


def import_datasets():
    """`datasets`, quiet and offline unless the user's environment says otherwise."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    return datasets


def parse(text):
    """(segments of NAME[/CONFIG], split or None) of a hub-name input, or None when it is not one: segments are
    hub names (letters, digits, `_.-`), so Windows paths (`C:\\data`, `C:/data`, `C:data`) never parse as one."""
    name, colon, split = text.partition(":")
    if colon and (not _SPLIT.fullmatch(split) or len(name) == 1):  # `C:data` is a Windows drive-relative path
        return None
    segments = name.split("/")
    if not 1 <= len(segments) <= 3 or not all(_SEGMENT.fullmatch(s) for s in segments):
        return None
    return segments, (split if colon else None)


def _cache_root(repo):
    """The folder `datasets` caches a hub dataset in: `NAME` or `OWNER___NAME` (snake_case name)."""
    datasets = import_datasets()
    from datasets.naming import camelcase_to_snakecase

    *owner, name = repo.split("/")
    return Path(datasets.config.HF_DATASETS_CACHE).expanduser() / "___".join([*owner, camelcase_to_snakecase(name)])


def _cached_configs(repo):
    """Config names the cache holds for a dataset (folders CONFIG/VERSION/HASH with a dataset_info.json)."""
    return sorted({p.parts[-4] for p in _cache_root(repo).glob("*/*/*/dataset_info.json")})


def _repo_and_config(segments):
    if len(segments) == 3:
        return "/".join(segments[:2]), segments[2]
    if len(segments) == 2 and not _cached_configs("/".join(segments)):
        return segments[0], segments[1]
    return "/".join(segments), None


def resolve(text, option=None):
    """The cached hub dataset named by `text` (see the module docstring); NlpkitError when it cannot be read."""
    segments, split = parse(text)
    repo, config = _repo_and_config(segments)
    where = f"{option} {text}" if option else f"input {text}"
    configs = _cached_configs(repo)
    if not configs:
        raise NlpkitError(
            f"{where}: cannot load dataset {repo!r}: no local file or folder has that name and the Hugging Face "
            f"datasets cache ({_cache_root(repo).parent}) does not hold it; nlpkit downloads nothing",
            hint="pass a local csv/json(l)/parquet file, or cache the dataset once where there is network "
                 f"(datasets.load_dataset({repo!r}{f', {config!r}' if config else ''}))")
    if config is None and len(configs) > 1:
        raise NlpkitError(f"{where}: the cache holds several configs of {repo!r}: {', '.join(configs)}",
                          hint=f"name one, e.g. {repo}/{configs[0]}:{split or 'SPLIT'}")
    if config is not None and config not in configs:
        raise NlpkitError(f"{where}: config {config!r} of {repo!r} is not in the datasets cache "
                          f"(cached: {', '.join(configs)})", hint="choose a cached config, or cache that one")
    builder = _cached_builder(repo, config or configs[0], where)
    splits = list(builder.info.splits or {})
    split = split or DEFAULT_SPLITS.get(option)
    if split is None:
        raise NlpkitError(f"{where}: name the split of the Hugging Face dataset (splits: {', '.join(splits)})",
                          hint=f"e.g. {text}:{splits[0] if splits else 'train'}")
    if split not in splits:
        raise NlpkitError(f"{where}: dataset {repo!r} ({builder.config.name}) has no split {split!r} "
                          f"(splits: {', '.join(splits)})", hint=f"name one, e.g. "
                                                                 f"{'/'.join(segments)}:{splits[0]}")
    return HubInput(repo, builder.config.name, split, builder)


def _cached_builder(repo, config, where):
    """The `datasets` Cache builder of a cached config: what `load_dataset` uses offline, without its hub calls."""
    import_datasets()
    from datasets.packaged_modules.cache.cache import Cache

    try:
        return Cache(dataset_name=repo.split("/")[-1], repo_id=repo, config_name=config, version="auto", hash="auto")
    except Exception as err:  # noqa: BLE001 - a damaged cache folder: one line, not a traceback
        text = str(err).strip().splitlines()
        raise NlpkitError(f"{where}: cannot read the cached dataset {repo!r} ({type(err).__name__}: "
                          f"{text[0] if text else ''})", hint="re-create its datasets cache folder") from None
