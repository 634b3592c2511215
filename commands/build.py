"""`nlpkit build`: an encoder from a preset or a config file, summarised and written as a model directory."""

from pathlib import Path

import typer
from rich.table import Table

from commands.common import console, info

# The presets are the JSON files of this folder (read here so that --help needs no import of Keras).
_PRESETS = sorted(path.stem for path in (Path(__file__).parents[1] / "nlpkit" / "encoders" / "presets").glob("*.json"))
# What `--list` shows: registry kind -> table title.
_CATALOGUE = {"preset": "presets", "encoder": "encoder kinds (config `kind`)", "block": "blocks",
              "attention": "attentions (`attention_type`)", "inner_attention": "inner attentions (compose with ':')"}


def build(
    preset: str = typer.Option(None, "--preset", help=f"A bundled preset: {', '.join(_PRESETS)}."),
    config: Path = typer.Option(None, "--config", help="A JSON or YAML encoder config (kind + arguments)."),
    output: Path = typer.Option(None, "--output", "-o", help="Model directory to write (required)."),
    vocab: Path = typer.Option(
        None, "--vocab",
        help="Tokenizer assets to copy in: vocab.txt or a SentencePiece *.model (default: the bundled BERT "
             "vocab, when the model's vocab_size is 30,522).",
    ),
    lower_case: bool = typer.Option(True, "--lower-case/--cased", help="Whether the WordPiece tokenizer lower-cases."),
    sequence_length: int = typer.Option(128, "--sequence-length", help="Sequence length for the FLOPs estimate."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
    list_catalogue: bool = typer.Option(
        False, "--list", help="List the presets, encoder kinds, blocks and attentions with their arguments, and exit."),
):
    """Build an encoder, print its summary (layers, parameters, FLOPs per token), write a model directory."""
    if list_catalogue:
        return _print_catalogue()
    from nlpkit.data.bundled import bert_vocab_for
    from nlpkit.models.model_dir import save_model_dir
    from nlpkit.encoders.presets import SIZE_BOUNDS, build_encoder, load_config, load_preset
    from nlpkit.encoders.summary import summarize
    from nlpkit.errors import NlpkitError
    from nlpkit.text.vocab import check_vocab_fits

    if (preset is None) == (config is None):
        raise NlpkitError("pass exactly one of --preset NAME or --config FILE", hint="see nlpkit build --help")
    if output is None:
        raise NlpkitError("pass --output DIR, the model directory to write", hint="see nlpkit build --help")
    low, high = SIZE_BOUNDS["max_sequence_length"]
    if not low <= sequence_length <= high:
        raise NlpkitError(f"--sequence-length {sequence_length} is outside {low}..{high}", hint="pass a token count")
    encoder_config = load_preset(preset) if preset else load_config(config)
    # As `nlpkit finetune --preset` does: a model of the bundled vocab's size gets that vocab, so
    # the directory fine-tunes without --vocab; any other size needs --vocab now, not at fine-tune time.
    bundled = vocab is None
    if bundled:
        vocab = bert_vocab_for(encoder_config.get("vocab_size"), f"--preset {preset}" if preset else f"--config {config}")
    check_vocab_fits(vocab, encoder_config.get("vocab_size"))  # before the (possibly slow) build
    encoder = build_encoder(encoder_config)
    encoder.build()
    summary = summarize(encoder, sequence_length)
    _print_summary(preset or str(config), encoder_config, summary)
    save_model_dir(encoder, encoder_config, vocab, output, lower_case=lower_case, overwrite=force)
    where = "the bundled BERT vocab (bert-base-uncased; --vocab to use another)" if bundled else str(vocab)
    info(f"tokenizer: {where}")
    info(f"wrote model directory [bold]{output}[/]")


def _print_summary(title, encoder_config, summary):
    table = Table(title=f"{encoder_config['kind']} encoder: {title}")
    for column, justify in (("component", "left"), ("layer", "left"), ("parameters", "right")):
        table.add_column(column, justify=justify)
    for name, layer, count in summary["components"]:
        table.add_row(name, layer, f"{count:,}")
    table.add_section()
    table.add_row("total", f"{summary['layers']} blocks", f"{summary['parameters']:,}", style="bold")
    console.print(table)
    gflops = summary["flops_per_token"] / 1e9
    console.print(
        f"layers: {summary['layers']}   parameters: {summary['parameters']:,} "
        f"(trainable {summary['trainable_parameters']:,})   "
        f"FLOPs per token at T={summary['sequence_length']}: {summary['flops_per_token']:,} ({gflops:.3f} GFLOPs)",
        highlight=False,
    )


def _print_catalogue():
    """One table per registry kind: each name and what it takes (a preset: the values it sets)."""
    from nlpkit import registry
    from nlpkit.encoders.presets import load_preset

    for kind, title in _CATALOGUE.items():
        table = Table(title=title)
        table.add_column("name")
        table.add_column("values" if kind == "preset" else "arguments (default)", overflow="fold")
        for name, entry in sorted(registry.entries(kind).items()):
            if kind == "preset":
                described = ", ".join(f"{key}={value!r}" for key, value in load_preset(name).items())
            else:
                described = ", ".join(_argument(p) for key, p in entry.parameters.items() if key not in _KERAS_BASE)
            table.add_row(name, described)
        console.print(table)


# Arguments every Keras layer takes; listing them for each entry would hide what is particular to it.
_KERAS_BASE = ("trainable", "dtype", "autocast", "name")


def _argument(parameter):
    if parameter.default is parameter.empty:
        return parameter.name
    return f"{parameter.name}={parameter.default!r}"


def register(app):
    app.command()(build)
