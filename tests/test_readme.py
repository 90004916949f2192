"""The README's examples run, and CI runs the README's commands.

CI (``.ci/run``) installs and tests exactly as the README's "Test" section
says and builds the docs as its "Documentation" section says; the "Install"
section's extras are among those CI installs.
"""

import pathlib
import re

import pytest

pytestmark = pytest.mark.expensive

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / 'README.md').read_text()
CI = (ROOT / '.ci' / 'run').read_text()


def fenced_blocks(language, text=README):
  return re.findall(rf'```{language}\n(.*?)```', text, flags=re.DOTALL)


def section_commands(section):
  """The shell commands of a README section's ```bash blocks, one a line."""
  assert f'\n## {section}\n' in README, f'README has no "{section}" section'
  body = README.split(f'\n## {section}\n', 1)[1].split('\n## ', 1)[0]
  return [
      line.strip()
      for block in fenced_blocks('bash', body)
      for line in block.strip().splitlines()
  ]


def install_extras(command):
  match = re.fullmatch(r'pip install "\.\[([a-z,]+)\]"', command)
  assert match, f'not an install of the clone with extras: {command!r}'
  return set(match.group(1).split(','))


def test_readme_python_examples_run():
  blocks = fenced_blocks('python')
  assert len(blocks) >= 5
  namespace = {}
  for number, block in enumerate(blocks):
    try:
      code = compile(block, f'README.md python block {number}', 'exec')
      exec(code, namespace)  # noqa: S102 - running the examples is the test
    except Exception as error:  # noqa: BLE001 - report which block failed
      pytest.fail(f'README python block {number} failed: {error!r}\n{block}')


@pytest.mark.parametrize('section', ['Test', 'Documentation'])
def test_ci_runs_the_readme_commands(section):
  commands = section_commands(section)
  assert commands
  ci_lines = [line.strip() for line in CI.splitlines()]
  for command in commands:
    # The command as a line of its own, or followed by `|| ...` and the like.
    assert any(
        line == command or line.startswith(command + ' ') for line in ci_lines
    ), f'.ci/run does not run {command!r}'


def test_ci_installs_what_the_readme_install_section_installs():
  (install,) = section_commands('Install')
  tested = [c for c in section_commands('Test') if c.startswith('pip install')]
  assert len(tested) == 1, tested
  assert install_extras(install) <= install_extras(tested[0])
  assert 'all' in install_extras(install)


def test_read_the_docs_runs_the_readme_documentation_commands():
  """.readthedocs.yaml's build commands start with the README's, as written
  (then copy the site where Read the Docs serves it from)."""
  config = (ROOT / '.readthedocs.yaml').read_text()
  block = config.split('  commands:\n', 1)[1]
  commands = []
  for line in block.splitlines():
    if not line.startswith('    - '):
      break
    commands.append(line.removeprefix('    - '))
  documentation = section_commands('Documentation')
  assert commands[: len(documentation)] == documentation, commands
