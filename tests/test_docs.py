"""The guides' examples run as written.

Each ```python block of a page in docs/guides/ runs, in order, in one
namespace per page, as tests/test_readme.py does for the README. The site
itself is built by .ci/run (sphinx-build with warnings as errors).
"""

import pathlib
import re

import pytest

GUIDES = pathlib.Path(__file__).resolve().parents[1] / 'docs' / 'guides'
PAGES = sorted(GUIDES.glob('*.md'))


def python_blocks(page):
  return re.findall(r'```python\n(.*?)```', page.read_text(), flags=re.DOTALL)


def test_there_are_guides_with_examples():
  assert PAGES, f'no guide pages in {GUIDES}'
  for page in PAGES:
    assert python_blocks(page), f'{page.name} has no python example'


@pytest.mark.parametrize('page', PAGES, ids=[p.stem for p in PAGES])
def test_guide_examples_run(page):
  namespace = {}
  for number, block in enumerate(python_blocks(page)):
    code = compile(block, f'{page.name} python block {number}', 'exec')
    try:
      exec(code, namespace)  # noqa: S102 - running the examples is the test
    except Exception as error:  # noqa: BLE001 - report which block failed
      pytest.fail(
          f'{page.name} python block {number} failed: {error!r}\n' f'{block}'
      )
