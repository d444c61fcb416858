// The web phone's keys without a page load: digits and Clear edit the answer here; Call/Send and End post
// the form to /simulator, which dials the gateway's real USSD callback and answers JSON. Without this
// script the same form works by page loads.
"use strict";
(function () {
  const form = document.getElementById("handset");
  const entry = document.getElementById("entry");
  const screen = document.getElementById("screen");
  const state = document.getElementById("state");
  const count = document.getElementById("count");
  const send = document.getElementById("send");
  const reason = document.getElementById("reason");
  const sms = document.getElementById("sms");
  const keys = Array.from("0123456789*#");
  let busy = false;

  function edit(key) {
    if (key === "clear") {
      entry.value = entry.value.slice(0, -1);
    } else if (entry.value.length < entry.maxLength) {
      entry.value += key;
    }
  }

  function show(handset) {
    for (const name of ["session", "code", "history", "inputs"]) {
      form.elements[name].value = handset[name];
    }
    entry.value = handset.entry;
    const body = handset.screen;
    screen.textContent = /^(CON|END) /.test(body) ? body.slice(4) : body || screen.dataset.idle;
    state.textContent = handset.session ? state.dataset.waiting
      : body.startsWith("END ") ? state.dataset.ended : "";
    count.textContent = count.dataset.template.replace("{count}", handset.count).replace("{limit}", handset.limit);
    send.textContent = handset.session ? send.dataset.send : send.dataset.call;
    reason.textContent = handset.reason;
    reason.hidden = !handset.reason;
    const items = handset.sms.map(function (message) {
      const item = document.createElement("li");
      const when = document.createElement("span");
      const time = document.createElement("time");
      when.className = "when";
      time.dateTime = message.at;
      time.textContent = message.at.slice(0, 16).replace("T", " ");
      when.append(time, " \u00b7 " + message.state);
      item.append(when, document.createElement("br"), message.text);
      return item;
    });
    if (items.length === 0) {
      const none = document.createElement("li");
      none.textContent = sms.dataset.none;
      items.push(none);
    }
    sms.replaceChildren(...items);
  }

  async function post(key) {
    busy = true;
    const fields = new URLSearchParams(new FormData(form));
    fields.set("press", key);
    try {
      const response = await fetch(form.action, {method: "POST", body: fields,
                                                 headers: {"Accept": "application/json"}});
      show(await response.json());
    } catch (error) {
      reason.textContent = reason.dataset.offline;
      reason.hidden = false;
    } finally {
      busy = false;
    }
  }

  function press(key) {
    if (busy) {
      return;
    }
    if (key === "send" || key === "end") {
      post(key);
    } else {
      edit(key);
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    press(event.submitter ? event.submitter.value : "send");
  });

  document.addEventListener("keydown", function (event) {
    const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(event.target.tagName);
    if (typing || event.ctrlKey || event.altKey || event.metaKey) {
      return;
    }
    const key = keys.includes(event.key) ? event.key
      : {Backspace: "clear", Escape: "end", Enter: event.target.tagName === "BUTTON" ? "" : "send"}[event.key];
    if (key) {
      event.preventDefault();
      press(key);
    }
  });
})();
