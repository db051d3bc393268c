"""Job script templates (files, rendered with string.Template: ${name}; $$ is a literal $)."""
import os
import shlex
from string import Template

HERE = os.path.dirname(os.path.abspath(__file__))


def render(_template, **values):
    with open(os.path.join(HERE, _template)) as f:
        return Template(f.read()).substitute(**values)


def exports(env):
    return "\n".join(f"export {k}={shlex.quote(str(v))}" for k, v in sorted(env.items()))


def command(argv):
    return " ".join(shlex.quote(a) for a in argv)
