"""The app's Jinja environment renders what Flask's (Jinja's) renders: its plain-call path, its globals handed over as a
dict and its dict-first attribute reads change how, not what (smart_app/ops/templating.py)."""

from __future__ import annotations

from flask.templating import Environment
from jinja2 import DictLoader, pass_context, pass_environment, pass_eval_context

from smart_app.ops.templating import DictFirstEnvironment


def plain(x: object = "") -> str:
    return f"plain:{x}"


@pass_context
def with_context(ctx, name: str) -> str:
    return f"ctx:{ctx.get(name)}"


@pass_eval_context
def with_eval_context(eval_ctx, text: str) -> str:
    return f"eval:{eval_ctx.autoescape}:{text}"


@pass_environment
def with_environment(env, text: str) -> str:
    return f"env:{type(env).__name__ in ('Environment', 'DictFirstEnvironment')}:{text}"


def stops() -> str:
    raise StopIteration


class Holder:
    def method(self, x: str) -> str:
        return f"method:{x}"

    @pass_context
    def marked(self, ctx, name: str) -> str:
        return f"marked:{ctx.get(name)}"


class CallableWithContext:
    @pass_context
    def __call__(self, ctx, name: str) -> str:
        return f"callable:{ctx.get(name)}"


class Plain:
    name = "attr"


PAGE = """{% macro m(v) %}[macro {{ v }}{% if caller %} {{ caller() }}{% endif %}]{% endmacro -%}
{{ plain() }} {{ plain("<b>") }} {{ with_eval_context("<i>") }} {{ with_environment("e") }} {{ stops() }}|
{{ holder.method("h") }} {{ holder.marked("who") }} {{ obj("who") }} {{ m(1) }} {% call m(2) %}inner{% endcall %}|
{% for i in [1, 2] %}{% set who = "loop" ~ i %}{{ with_context("who") }} {{ holder.marked("who") }} {% endfor %}|
{% set who = "block" %}{{ with_context("who") }} {{ d.name }} {{ d.items is callable }} {{ o.name }}
{{ d.missing is defined }}|
{% include "part.html" %}|{{ late() if late is defined else "none" }}"""

PART = """{{ plain("part") }} {{ with_context("who") }} {{ late() if late is defined else "none" }}"""


def _render(env_class: type, *, late: bool = False, own_globals: bool = False) -> str:
    # No app: Flask's environment needs one only to make its loader.
    env = env_class(None, loader=DictLoader({"page.html": PAGE, "part.html": PART}), autoescape=True)
    env.globals.update(plain=plain, with_context=with_context, with_eval_context=with_eval_context,
                       with_environment=with_environment, stops=stops, holder=Holder(), obj=CallableWithContext())
    if own_globals:
        template = env.from_string(PAGE, globals={"who": "own"})
    else:
        template = env.get_template("page.html")
    if late:  # a global added after the template was loaded is seen, as through Jinja's ChainMap
        env.globals["late"] = lambda: "late"
    return template.render(who="top", d={"name": "key", "items": 1}, o=Plain())


def test_renders_as_jinja_does():
    for late in (False, True):
        for own in (False, True):
            ours = _render(DictFirstEnvironment, late=late, own_globals=own)
            assert ours == _render(Environment, late=late, own_globals=own)
    ours = _render(DictFirstEnvironment, late=True)
    assert "plain:&lt;b&gt;" in ours and "eval:True:&lt;i&gt;" in ours and "env:True:e" in ours
    assert "ctx:loop1 marked:loop1 ctx:loop2 marked:loop2" in ours and "ctx:block key" in ours
    assert "callable:top" in ours and "[macro 2 inner]" in ours and ours.endswith("|late")
    assert "plain:part ctx:block late|" in ours


def test_globals_stay_the_environments():
    env = DictFirstEnvironment(None, loader=DictLoader({"t.html": "{{ x }}"}))
    env.globals["x"] = 1
    template = env.get_template("t.html")
    assert template.render() == "1"
    template.globals["x"] = 2  # a template's own global: the environment's stays
    assert template.render() == "2" and env.globals["x"] == 1
    assert env.get_template("t.html").render() == "2" and env.from_string("{{ x }}").render() == "1"
