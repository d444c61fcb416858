"""Menu files: a wrong one is refused at start-up with the file and screen named."""

import textwrap

import pytest

from flows import MenuError
from flows.menu import load_flow, load_menus
from gateway.config import data_root

GOOD = """
spec_version: 1
flow: demo
title: demo.title
start: ask
screens:
  ask:
    kind: input
    text: demo.ask
    validate: {type: text, max: 10}
    save: thing
    next: done
  done:
    kind: end
    text: demo.done
"""

BROKEN = [
    ("spec_version: 1", "spec_version: 2", "spec_version must be 1"),
    ("flow: demo", "flow: other", "'flow' must be 'demo'"),
    ("start: ask", "start: nowhere", "'start' names no screen"),
    ("kind: input", "kind: question", "screen 'ask': 'kind' must be one of"),
    ("next: done", "next: nowhere", "screen 'ask': goes to unknown screen 'nowhere'"),
    ("next: done", "next: '@elsewhere'", "jumps to unknown flow '@elsewhere'"),
    ("{type: text, max: 10}", "{type: colour}", "screen 'ask': unknown validator type 'colour'"),
    ("{type: text, max: 10}", "{type: text, max: 10, min: 20}", "screen 'ask': bad options"),
    ("{type: text, max: 10}", "{type: digits, lenght: 3}", "screen 'ask': bad options for validator 'digits'"),
    ("    save: thing\n", "", "screen 'ask': an input screen needs 'save'"),
    ("    text: demo.done", "    text: demo.done\n    choices: []", "screen 'done': keys ['choices'] do not belong"),
    ("next: done", "next:\n      - when: {thing: x}\n        to: done",
     "the last branch must have no 'when'"),
    ("next: done", "next:\n      - when: {colour: x}\n        to: done\n      - to: done",
     "branches on 'colour', which no screen saves"),
    ("    text: demo.done", "    text: demo.done\n    action: submit", "'submit' in a flow without 'submits: true'"),
    ("screens:", "screens: {}\nextra:", "unknown keys"),
    ("{type: text, max: 10}", "{type: digits, length: 2}", "screen 'ask': the validator accepts 00, 98, which are "
                                                           "navigation keys"),
    ("{type: text, max: 10}", "{type: digits, min: 1, max: 4}", "the validator accepts 0, 00, 98"),
    ("{type: text, max: 10}", "{type: code, min: 1, max: 8}", "the validator accepts 0, 00, 98"),
    ("    kind: end", "    kind: view\n    next: ask", "screen 'done': keys ['next'] do not belong on a view screen"),
    ("    kind: end", "    kind: notice", "screen 'done': 'next' must be a screen name"),
    ("    text: demo.done\n", "    text: demo.done\n  pick:\n    kind: menu\n    text: demo.pick\n    save: picked\n"
     "    next: done\n    choices:\n      - {label: demo.other, value: other, shown_as: colour}\n",
     "screen 'pick': a choice is shown as 'colour', which no screen saves"),
]


# A flow an SMS can submit: `DEMO <word> <text>`.
WORDED = """
spec_version: 1
flow: demo
title: demo.title
submits: true
sms: {keyword: demo.keyword, usage: demo.usage}
start: pick
screens:
  pick:
    kind: menu
    text: demo.pick
    save: kind
    next: where
    choices:
      - {label: demo.a, value: a, sms_word: demo.word_a}
      - {label: demo.b, value: b, sms_word: demo.word_b}
  where:
    kind: input
    text: demo.where
    validate: {type: text, max: 10}
    save: place
    role: address
    next: what
  what:
    kind: input
    text: demo.what
    validate: {type: text, max: 10}
    save: words
    role: description
    next: done
  done:
    kind: end
    text: demo.done
    action: submit
"""

WORDED_BROKEN = {  # what the loader says -> the edits to WORDED that make it say so
    "screen 'where': 'role' must be one of address, description": [("role: address", "role: colour")],
    "screen 'what': role 'description' is already screen 'where's": [("role: address", "role: description")],
    "'sms': needs an input screen with 'role: description'": [("    role: description\n", "")],
    "screen 'pick': give every choice an 'sms_word'": [(", sms_word: demo.word_b", "")],
    "give every choice an 'sms_word', and 'save' the answer": [("    save: kind\n", "")],
    "'role' in a flow without 'submits: true'": [("submits: true\nsms: {keyword: demo.keyword, usage: demo.usage}",
                                                  "submits: false"), ("    action: submit\n", "")],
    "'sms' must be a mapping with 'keyword' and 'usage'": [("usage: demo.usage}", "}")],
    "choice 1: 'sms_word' must be a catalog message id": [("sms_word: demo.word_a", "sms_word: ''")],
}


def test_menu_roles_and_sms_words_are_read_from_the_file(tmp_path):
    flow = load_flow(write(tmp_path, WORDED))
    assert (flow.role("address").save, flow.role("description").save) == ("place", "words")
    assert (flow.sms.keyword, flow.sms.usage, flow.sms.choose, flow.sms.describe) == (
        "demo.keyword", "demo.usage", "kind", "words")
    assert [c.sms_word for c in flow.screens["pick"].choices] == ["demo.word_a", "demo.word_b"]


@pytest.mark.parametrize("expected, edits", WORDED_BROKEN.items())
def test_menu_broken_roles_and_sms_words_are_refused(tmp_path, expected, edits):
    text = WORDED
    for old, new in edits:
        assert old in text
        text = text.replace(old, new, 1)
    write(tmp_path, text)
    with pytest.raises(MenuError) as caught:
        load_flow(tmp_path / "demo.yaml")
    assert expected in str(caught.value) and "demo.yaml" in str(caught.value)


def write(folder, text, name="demo"):
    (folder / f"{name}.yaml").write_text(textwrap.dedent(text))
    return folder / f"{name}.yaml"


def test_menu_good_file_compiles(tmp_path):
    flow = load_flow(write(tmp_path, GOOD))
    assert list(flow.screens) == ["ask", "done"]
    assert flow.machine.get_state("ask")


@pytest.mark.parametrize("old, new, expected", BROKEN)
def test_menu_broken_file_is_refused_with_a_clear_reason(tmp_path, old, new, expected):
    assert old in GOOD
    write(tmp_path, GOOD.replace(old, new, 1))
    write(tmp_path, GOOD.replace("flow: demo", "flow: main"), name="main")
    with pytest.raises(MenuError) as caught:
        load_menus(tmp_path)
    assert expected in str(caught.value)
    assert "demo.yaml" in str(caught.value)


@pytest.mark.parametrize("validate", ["{type: digits, length: 3}", "{type: digits, min: 3, max: 6}",
                                      "{type: text, max: 10}", "{type: code}", "{type: date}"])
def test_menu_validators_that_never_take_a_navigation_key_as_a_value_load(tmp_path, validate):
    """Free text is allowed to be short: `0`, `00` and `98` are navigation there, and no one's name."""
    flow = load_flow(write(tmp_path, GOOD.replace("{type: text, max: 10}", validate)))
    assert flow.screens["ask"].validator


def test_menu_notice_leads_on_and_view_waits(tmp_path):
    write(tmp_path, GOOD.replace("next: done", "next: saved").replace("screens:", """screens:
  saved:
    kind: notice
    text: demo.saved
    next: '@main'"""))
    write(tmp_path, GOOD.replace("flow: demo", "flow: main").replace("kind: end", "kind: view"), name="main")
    flows = load_menus(tmp_path)
    assert flows["demo"].jumps == {"main"} and flows["demo"].screens["saved"].next[0].target == "@main"
    assert flows["main"].screens["done"].kind == "view"


def test_menu_yes_and_no_keys_are_refused_not_misread(tmp_path):
    confirm = GOOD.replace("next: done", "next: sure").replace("screens:", """screens:
  sure:
    kind: confirm
    text: demo.sure
    yes: done
    no: done""")
    write(tmp_path, confirm)
    with pytest.raises(MenuError, match=r"screen 'sure': keys \[False, True\] do not belong"):
        load_flow(tmp_path / "demo.yaml")


def test_menu_too_many_choices(tmp_path):
    choices = "\n".join(f"      - {{label: demo.c{n}, next: done}}" for n in range(10))
    write(tmp_path, GOOD.replace("""    kind: input
    text: demo.ask
    validate: {type: text, max: 10}
    save: thing
    next: done""", f"""    kind: menu
    text: demo.ask
    choices:
{choices}"""))
    with pytest.raises(MenuError, match="at most 9 choices"):
        load_flow(tmp_path / "demo.yaml")


def test_menu_folder_needs_a_main_menu(tmp_path):
    write(tmp_path, GOOD)
    with pytest.raises(MenuError, match="no main menu"):
        load_menus(tmp_path)


def test_menu_not_yaml(tmp_path):
    (tmp_path / "demo.yaml").write_text("screens: [unclosed")
    with pytest.raises(MenuError, match="demo.yaml: not valid YAML"):
        load_flow(tmp_path / "demo.yaml")


def test_menu_shipped_menus_load():
    flows = load_menus(data_root() / "menus")
    assert set(flows) == {"main", "report", "voter", "permit", "status", "language"}
