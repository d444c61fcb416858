"""Open311 service descriptions, made from forms.

A form describes one flow that makes submissions, in one language, as plain
data (the gateway makes it from the menus; sync/ never reads flows):

    {"service": "report", "title": "Problem report", "label": "Report a problem",
     "address": "location",          # the answer whose screen has `role: address`, or None
     "description": "description",   # the answer with `role: description`, or None
     "questions": [                  # every screen that saves an answer, in menu order
        {"answer": "category", "prompt": "What is the problem?", "kind": "choice", "role": None,
         "choices": [{"value": "road", "label": "Damaged road"}, ...]},
        {"answer": "location", "prompt": "Where is it?", "kind": "text", "role": "address", "choices": []},
        ...]}

The answers with a role fill Open311's own `address` and `description`; every
other question is an attribute: a choice question a `singlevaluelist` (keys
are the choice values, names their labels), any other a `string`. The
service's name is the form's title, its description the main menu's label,
its keywords the choice labels.
"""

from __future__ import annotations

from typing import Mapping, Sequence

ROLES = ("address", "description")


def open311_services(forms: Mapping[str, dict], codes: Sequence[str]) -> dict[str, dict]:
    """The Open311 service description of each form in `codes`, by code, in that order.

    Each also carries `fields`: which answer fills `address` and `description`.
    ValueError names a code that is not a form.
    """
    services = {}
    for code in codes:
        form = forms.get(code)
        if form is None:
            raise ValueError(f"central.open311_services: {code!r} is not a flow that makes submissions")
        services[code] = _service(code, form)
    return services


def _service(code: str, form: dict) -> dict:
    fields = {role: form[role] for role in ROLES if form.get(role)}
    attributes = []
    for question in form["questions"]:
        if question.get("role") in ROLES or question["answer"] in fields.values():
            continue
        listed = question["kind"] == "choice"
        choices = (question.get("choices") or []) if listed else []
        attributes.append({
            "variable": True, "code": question["answer"],
            "datatype": "singlevaluelist" if listed else "string",
            "required": True, "datatype_description": None, "order": len(attributes) + 1,
            "description": question["prompt"],
            "values": [{"key": choice["value"], "name": choice["label"]} for choice in choices],
        })
    return {
        "service_code": code, "service_name": form["title"], "description": form["label"],
        "metadata": bool(attributes), "type": "realtime",
        "keywords": ", ".join(value["name"] for attribute in attributes for value in attribute["values"]),
        "group": form["title"], "attributes": attributes, "fields": fields,
    }


def not_personal(form: dict | None) -> frozenset[str]:
    """The answers of `form` that a role without `personal` may see: those chosen from a list, and, for a
    form Open311 publishes (`published`), its place and description, which are public anyway. Typed answers
    such as a NIK, a name, a birth date, a business name or a voter's village are personal; so is any answer
    the form does not describe."""
    if form is None:
        return frozenset()
    public = (form.get("address"), form.get("description")) if form.get("published") else ()
    return frozenset(question["answer"] for question in form["questions"]
                     if question["kind"] == "choice" or question["answer"] in public)


def place_shown(form: dict | None, place: str | None, personal: bool) -> str | None:
    """The place (`village`) as a role sees it: whole with `personal` or when the form is published, else
    nothing: the place a villager typed for a registration or a permit is theirs."""
    return place if personal or (form or {}).get("published") else None
