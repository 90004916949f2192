"""report.md from a report: the committed protocol report is rewritten to
the letter, and its optional parts (notes, acceptance not evaluated)."""

import copy
import json
import pathlib

import pytest

from bort_jax.programs.explain import report
from bort_jax.programs.explain.report import markdown

RESULTS = (
    pathlib.Path(__file__).parents[2]
    / 'experiments'
    / 'results'
    / 'explain_protocol'
)


@pytest.fixture(scope='module')
def committed():
  return json.loads((RESULTS / 'report.json').read_text())


def test_the_committed_report_is_rewritten_to_the_letter(committed, tmp_path):
  path = report.write_markdown(committed, str(tmp_path))
  with open(path) as f:
    assert f.read() == (RESULTS / 'report.md').read_text()


def test_notes_close_the_report(committed):
  text = markdown.render_markdown(committed | {'notes': ['first', 'second']})
  assert text.endswith('s\n\n## Notes\n\n- first\n- second\n'), text[-80:]
  assert '## Notes' not in markdown.render_markdown(committed)


def test_acceptance_not_evaluated_says_why(committed):
  changed = copy.deepcopy(committed)
  changed['acceptance'] = report.acceptance({})
  text = markdown.render_markdown(changed)
  assert (
      '## Acceptance criteria\n\nNot evaluated: bort_invertible_cnn was not '
      'among the models.\n\n## Runs and accuracy\n'
  ) in text
