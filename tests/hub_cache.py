"""A real offline Hugging Face `datasets` cache for tests: a `datasets` builder writes the given rows into a
temporary HF_DATASETS_CACHE, leaving the same Arrow files + dataset_info.json layout a hub download leaves."""


def write_cached_dataset(folder, dataset_name, configs, label_features, *, text_column="text", repo_id=None,
                         hash="0" * 16):
    """Cache `dataset_name` (or `repo_id` OWNER/NAME) under `folder`: `configs` {config: {split: [(text, label)]}}
    as columns `text_column` (string) and "label" (`label_features` {config: callable(datasets) -> feature})."""
    from nlpkit.data.hub import import_datasets

    datasets = import_datasets()

    class Cached(datasets.GeneratorBasedBuilder):
        BUILDER_CONFIGS = [datasets.BuilderConfig(name=name, version=datasets.Version("1.0.0")) for name in configs]

        def _info(self):
            label = label_features[self.config.name](datasets)
            return datasets.DatasetInfo(features=datasets.Features({text_column: datasets.Value("string"),
                                                                    "label": label}))

        def _split_generators(self, dl_manager):
            return [datasets.SplitGenerator(name=split, gen_kwargs={"rows": rows})
                    for split, rows in configs[self.config.name].items()]

        def _generate_examples(self, rows):
            for i, (text, label) in enumerate(rows):
                yield i, {text_column: text, "label": label}

    for config in configs:
        Cached(cache_dir=str(folder), dataset_name=dataset_name, repo_id=repo_id, config_name=config,
               hash=hash).download_and_prepare()
    return folder


def use_cache(monkeypatch, folder):
    """Point `datasets` (and nlpkit's hub reader) at `folder` for one test."""
    import datasets

    monkeypatch.setenv("HF_DATASETS_CACHE", str(folder))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(folder))
    return folder
