"""The BertEncoder rows of benchmarks/attention.py (tiny sizes: the plumbing, not the figures)."""

from nlpkit.bench import encoder_attention


def test_a_row_is_measured_in_its_own_process():
    result = encoder_attention.measure_in_encoder("linear", 16, hidden=8, heads=2, layers=1)
    assert result.ok and result.note == "", result.note
    assert result.seconds > 0 and result.peak_bytes >= 0
    # The child's resident high-water mark: at least the framework it imported, never 0.
    assert result.process_peak_bytes > 100 * 1024**2


def test_a_failing_row_records_why():
    result = encoder_attention.measure_in_encoder("linear", 16, hidden=10, heads=4, layers=1)  # 10 % 4 != 0
    assert not result.ok and result.note.startswith("failed: NlpkitError")
