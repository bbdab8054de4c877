"""The measured blocks of docs/benchmarks.md are rendered from the results JSON, not typed."""
from benchmarks import docs


def test_the_measured_blocks_of_the_docs_are_what_their_results_render():
    text = docs.DOC.read_text()
    for name in docs.BLOCKS:
        assert f"<!-- rendered: {name} -->" in text and f"<!-- end: {name} -->" in text, name
    assert docs.render(text) == text, "docs/benchmarks.md is stale: run `python -m benchmarks.docs`"


def test_the_readme_headline_figures_are_rendered_too():
    text = docs.README.read_text()
    assert "<!-- rendered: pipeline_time -->" in text
    assert docs.render(text) == text, "README.md is stale: run `python -m benchmarks.docs`"
