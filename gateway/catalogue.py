"""Open311 service descriptions, made from the menus for the central backend.

The central backend (in sync/) may not read flows; the CLI hands it these
plain dicts. A flow's choice screens become `singlevaluelist` attributes
(keys are the choice values, names their labels), other text answers
`string` attributes; the answers named `description` and `location` or
`village` fill Open311's own `description` and `address`.
"""

from __future__ import annotations

from flows import Engine, FlowError

DESCRIPTION_ANSWERS = ("description",)
ADDRESS_ANSWERS = ("location", "village")


def open311_services(engine: Engine, codes: tuple[str, ...], lang: str = "en") -> list[dict]:
    text = engine.catalog.text
    main = engine.flows["main"]
    services = []
    for code in codes:
        flow = engine.flows.get(code)
        if flow is None or not flow.submits:
            raise FlowError(f"central.open311_services: {code!r} is not a flow that makes submissions")
        label = next((choice.label for screen in main.screens.values() for choice in screen.choices
                      if any(b.target == f"@{code}" for b in choice.route)), flow.title)
        fields, attributes = {}, []
        for screen in flow.screens.values():
            if not screen.save:
                continue
            if screen.save in DESCRIPTION_ANSWERS:
                fields["description"] = screen.save
            elif screen.save in ADDRESS_ANSWERS:
                fields["address"] = screen.save
            elif screen.choices:
                attributes.append({"code": screen.save, "datatype": "singlevaluelist",
                                   "description": text(lang, screen.text),
                                   "values": [{"key": c.value, "name": text(lang, c.label)} for c in screen.choices]})
            elif screen.kind == "input":
                attributes.append({"code": screen.save, "datatype": "string",
                                   "description": text(lang, screen.text), "values": []})
        for order, attribute in enumerate(attributes, 1):
            attribute.update(variable=True, required=True, datatype_description=None, order=order)
        services.append({
            "service_code": code, "service_name": text(lang, flow.title), "description": text(lang, label),
            "metadata": bool(attributes), "type": "realtime",
            "keywords": ", ".join(v["name"] for a in attributes for v in a["values"]),
            "group": text(lang, flow.title), "attributes": attributes, "fields": fields,
        })
    return services
