"""The README's examples run, and CI runs the README's install and test commands."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / 'README.md').read_text()


def fenced_blocks(language):
  return re.findall(rf'```{language}\n(.*?)```', README, flags=re.S)


def test_readme_python_examples_run():
  blocks = fenced_blocks('python')
  assert len(blocks) >= 5
  namespace = {}
  for number, block in enumerate(blocks):
    try:
      exec(compile(block, f'README.md python block {number}', 'exec'), namespace)
    except Exception as error:  # pragma: no cover - the message is the point
      pytest.fail(f'README python block {number} failed: {error!r}\n{block}')


@pytest.mark.parametrize('section', ['Install', 'Test'])
def test_ci_runs_the_readme_commands(section):
  body = README.split(f'## {section}\n', 1)[1].split('\n## ', 1)[0]
  commands = [c.strip() for block in re.findall(r'```bash\n(.*?)```', body, flags=re.S)
              for c in block.strip().splitlines()]
  assert len(commands) == 1, commands
  assert commands[0] in (ROOT / '.ci' / 'run').read_text()
