"""`nlpkit build`: an encoder from a preset or a config file, summarised and written as a model directory."""

from pathlib import Path

import typer
from rich.table import Table

from commands.common import console, info


def build(
    preset: str = typer.Option(None, "--preset", help="Name of a bundled preset (e.g. bert_base)."),
    config: Path = typer.Option(None, "--config", help="A JSON or YAML encoder config (kind + arguments)."),
    output: Path = typer.Option(..., "--output", "-o", help="Model directory to write."),
    vocab: Path = typer.Option(None, "--vocab", help="Tokenizer assets to copy in: vocab.txt or a SentencePiece *.model."),
    lower_case: bool = typer.Option(True, "--lower-case/--cased", help="Whether the WordPiece tokenizer lower-cases."),
    sequence_length: int = typer.Option(128, "--sequence-length", help="Sequence length for the FLOPs estimate."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
):
    """Build an encoder, print its summary (layers, parameters, FLOPs per token), write a model directory."""
    from nlpkit.models.model_dir import save_model_dir
    from nlpkit.encoders.presets import SIZE_BOUNDS, build_encoder, load_config, load_preset
    from nlpkit.encoders.summary import summarize
    from nlpkit.errors import NlpkitError
    from nlpkit.text.vocab import check_vocab_fits

    if (preset is None) == (config is None):
        raise NlpkitError("pass exactly one of --preset NAME or --config FILE", hint="see nlpkit build --help")
    low, high = SIZE_BOUNDS["max_sequence_length"]
    if not low <= sequence_length <= high:
        raise NlpkitError(f"--sequence-length {sequence_length} is outside {low}..{high}", hint="pass a token count")
    encoder_config = load_preset(preset) if preset else load_config(config)
    if vocab is not None:  # checked before the (possibly slow) build, and again when it is copied in
        check_vocab_fits(vocab, encoder_config.get("vocab_size"))
    encoder = build_encoder(encoder_config)
    encoder.build()
    summary = summarize(encoder, sequence_length)
    _print_summary(preset or str(config), encoder_config, summary)
    save_model_dir(encoder, encoder_config, vocab, output, lower_case=lower_case, overwrite=force)
    if vocab is None:
        info("[yellow]note:[/] no --vocab given: the model directory holds no tokenizer assets")
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


def register(app):
    app.command()(build)
