/* mediachat chat page: a plain-JavaScript client of the websocket protocol in docs/protocol.md.
 *
 * The database is the record and the socket a courier: the page keeps the conversation id and the last
 * message id it saw in sessionStorage, asks for `history` after that id whenever it (re)connects, and
 * resends every message that has no `ack` yet under the same client_id (the server deduplicates).
 *
 * Every piece of server text enters the page through textContent or createTextNode, never as markup.
 */
(() => {
  "use strict";

  const STORAGE_CONVERSATION = "mediachat.conversation";
  const STORAGE_LAST_ID = "mediachat.lastId";
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const AUTOSCROLL_SLACK_PX = 120;
  const HISTORY_POLL_MS = 2000;
  const RESYNC_RETRY_MS = 1000;
  const REASONS = {
    1: [
      ["helpful", "Helpful"],
      ["accurate", "Accurate"],
    ],
    "-1": [
      ["off_topic", "Off topic"],
      ["wrong", "Wrong"],
      ["too_long", "Too long"],
      ["too_short", "Too short"],
      ["unsafe", "Unsafe"],
      ["other", "Other"],
    ],
  };
  const UNRETRYABLE = new Set(["empty_text", "text_too_long", "invalid_text", "invalid_field"]);

  const $ = (id) => document.getElementById(id);
  const ui = {
    log: $("log"),
    emptyState: $("empty-state"),
    composer: $("composer"),
    input: $("composer-input"),
    count: $("composer-count"),
    send: $("send"),
    stop: $("stop"),
    connection: $("connection"),
    connectionText: $("connection-text"),
    newConversation: $("new-conversation"),
    cards: $("cards"),
    cardsEmpty: $("recommendations-empty"),
  };

  const state = {
    socket: null,
    attempt: 0,
    reconnectTimer: null,
    welcomes: 0,
    maxChars: Number(ui.count.dataset.max) || 2000,
    conversationId: readStoredInt(STORAGE_CONVERSATION),
    // Nothing is on screen after a page load, so the first resync asks for the whole conversation.
    lastId: 0,
    outbox: [], // {clientId, text, sent, el}: messages without an ack, in the order they were written
    rendered: new Map(), // message id -> its element
    unfinished: new Set(), // assistant message ids that streamed tokens but have no `done` yet
    typing: new Map(), // question id -> "typing" placeholder of its reply, before the first token
    pendingReplies: new Set(), // question ids whose reply has not ended
    // Answers still due to our `history` and `feedback` frames, oldest first. The server answers frames in
    // order, so an `error` without a client_id belongs to the oldest of them.
    awaiting: [],
    resyncTimer: null,
    // After "New conversation" while a reply is on its way, that reply's events belong to the old one.
    discarding: false,
  };

  // ---------------------------------------------------------------- small DOM helpers: elements and text nodes only

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "className") el.className = value;
      else if (key === "dataset") Object.assign(el.dataset, value);
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function setText(el, text) {
    el.textContent = text;
  }

  /** An address a reader may follow: http(s) or a path on this site; anything else becomes inert. */
  function safeHref(url) {
    try {
      const parsed = new URL(String(url), window.location.href);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch {
      return null;
    }
  }

  function readStoredInt(key) {
    const value = Number.parseInt(window.sessionStorage.getItem(key) || "", 10);
    return Number.isSafeInteger(value) && value > 0 ? value : null;
  }

  function newClientId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    // randomUUID needs a secure context; getRandomValues does not.
    const bytes = window.crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  function timeElement(iso) {
    const when = iso ? new Date(iso) : new Date();
    if (Number.isNaN(when.getTime())) return null;
    return h("time", { datetime: when.toISOString() }, clock.format(when));
  }

  function charCount(text) {
    return Array.from(text).length; // code points, as the server counts them
  }

  function kindLabel(kind) {
    const text = String(kind || "");
    return text ? text.charAt(0).toUpperCase() + text.slice(1) : "";
  }

  // ---------------------------------------------------------------- scrolling

  function pinnedToBottom() {
    return ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < AUTOSCROLL_SLACK_PX;
  }

  function keepScrolled(change) {
    const pinned = pinnedToBottom();
    const result = change();
    if (pinned) ui.log.scrollTop = ui.log.scrollHeight;
    return result;
  }

  // ---------------------------------------------------------------- persistent state

  function setConversation(id) {
    state.conversationId = id;
    if (id === null) window.sessionStorage.removeItem(STORAGE_CONVERSATION);
    else window.sessionStorage.setItem(STORAGE_CONVERSATION, String(id));
  }

  function noteSeen(id) {
    if (Number.isSafeInteger(id) && id > state.lastId) {
      state.lastId = id;
      window.sessionStorage.setItem(STORAGE_LAST_ID, String(id));
    }
  }

  /** The id to resync after: the last one seen, but never past a reply that was still streaming. */
  function resumeAfter() {
    let after = state.lastId;
    for (const id of state.unfinished) after = Math.min(after, id - 1);
    return Math.max(after, 0);
  }

  // ---------------------------------------------------------------- connection

  function setConnection(kind, text) {
    ui.connection.dataset.state = kind;
    setText(ui.connectionText, text);
  }

  function isOpen() {
    return state.socket !== null && state.socket.readyState === WebSocket.OPEN && state.welcomes > 0;
  }

  function send(frame) {
    if (state.socket === null || state.socket.readyState !== WebSocket.OPEN) return false;
    state.socket.send(JSON.stringify(frame));
    return true;
  }

  function connect() {
    window.clearTimeout(state.reconnectTimer);
    state.reconnectTimer = null;
    setConnection("connecting", state.attempt ? "Reconnecting…" : "Connecting…");
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${window.location.host}/ws/chat/`);
    state.socket = socket;
    state.welcomes = 0;
    socket.addEventListener("message", (event) => {
      if (socket === state.socket) handleFrame(event.data);
    });
    socket.addEventListener("close", () => {
      if (socket === state.socket) onClose();
    });
  }

  function onClose() {
    state.socket = null;
    state.welcomes = 0;
    for (const answer of state.awaiting) {
      if (answer.kind === "feedback") feedbackFailed(answer.messageId, "Not saved: the connection dropped. Rate again.");
    }
    state.awaiting = [];
    // Whatever was in flight is unconfirmed now: resend it all after the next welcome.
    for (const entry of state.outbox) entry.sent = false;
    // The reply being streamed ended with the socket; the resync brings back what the server stored.
    for (const [, placeholder] of state.typing) placeholder.remove();
    state.typing.clear();
    state.pendingReplies.clear();
    state.discarding = false;
    for (const id of state.unfinished) {
      const el = state.rendered.get(id);
      if (el) el.dataset.state = "disconnected";
    }
    updateStop();
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** state.attempt) * (0.75 + Math.random() * 0.5);
    state.attempt += 1;
    setConnection("offline", `Offline, retrying in ${Math.max(1, Math.round(delay / 1000))} s…`);
    state.reconnectTimer = window.setTimeout(connect, delay);
  }

  function onWelcome(event) {
    state.attempt = 0;
    state.welcomes += 1;
    api.welcomes += 1;
    if (Number.isSafeInteger(event.max_message_chars) && event.max_message_chars > 0) {
      state.maxChars = event.max_message_chars;
      ui.count.dataset.max = String(state.maxChars);
    }
    setConnection("online", "Connected");
    requestHistory();
    flushOutbox();
    updateComposer();
  }

  // ---------------------------------------------------------------- incoming frames

  function handleFrame(raw) {
    let event;
    try {
      event = JSON.parse(raw);
    } catch {
      return;
    }
    if (event === null || typeof event !== "object") return;
    switch (event.type) {
      case "welcome":
        return onWelcome(event);
      case "ack":
        return onAck(event);
      case "token":
        return onToken(event);
      case "recommendations":
        return onRecommendations(event);
      case "done":
        return onDone(event);
      case "feedback_saved":
        return onFeedbackSaved(event);
      case "history":
        return onHistory(event);
      case "error":
        return onError(event);
      default:
        return undefined;
    }
  }

  function onAck(event) {
    const index = state.outbox.findIndex((entry) => entry.clientId === event.client_id);
    if (index < 0) return; // an answer to a message from before "New conversation"
    const [entry] = state.outbox.splice(index, 1);
    state.discarding = false;
    if (state.conversationId !== event.conversation_id) setConversation(event.conversation_id);
    const existing = state.rendered.get(event.message_id);
    if (existing && existing !== entry.el) {
      entry.el.remove(); // the resync already showed it
    } else {
      entry.el.dataset.messageId = String(event.message_id);
      state.rendered.set(event.message_id, entry.el);
      setMessageState(entry.el, "sent", "Sent");
    }
    noteSeen(event.message_id);
    if (!event.duplicate) {
      dropUnstarted(); // a new message supersedes those whose reply has not started (docs/protocol.md)
      state.pendingReplies.add(event.message_id);
      showTyping(event.message_id);
    }
    updateStop();
    flushOutbox(); // messages that waited for the new conversation's id
  }

  function onToken(event) {
    if (state.discarding || typeof event.text !== "string") return;
    const el = assistantElement(event.message_id, null);
    state.unfinished.add(event.message_id);
    el.dataset.state = "streaming";
    el.setAttribute("aria-busy", "true"); // screen readers hear the reply once, when it is done
    keepScrolled(() => el.querySelector(".bubble-text").appendChild(document.createTextNode(event.text)));
  }

  function onRecommendations(event) {
    if (state.discarding || !Array.isArray(event.items)) return;
    renderCards(event.items);
  }

  function onDone(event) {
    state.pendingReplies.delete(event.reply_to);
    if (state.discarding) {
      state.discarding = false;
      removeTyping(event.reply_to);
      updateStop();
      return;
    }
    const el = assistantElement(event.message_id, event.reply_to);
    state.unfinished.delete(event.message_id);
    keepScrolled(() => finishAssistant(el, event));
    noteSeen(event.message_id);
    updateStop();
  }

  function onFeedbackSaved(event) {
    settleAnswer("feedback", event.message_id);
    const el = state.rendered.get(event.message_id);
    if (!el) return;
    const box = el.querySelector(".feedback");
    if (!box) return;
    showRating(box, event.rating);
    box.dataset.state = "saved";
    setText(box.querySelector(".feedback-status"), "Thanks, feedback saved");
  }

  function onHistory(event) {
    settleAnswer("history", null);
    if (event.conversation_id !== state.conversationId || !Array.isArray(event.messages)) return;
    keepScrolled(() => {
      for (const message of event.messages) upsertFromHistory(message);
    });
    if (state.rendered.size) hideEmptyState();
    updateStop();
    // A reply another connection is still writing: look again shortly for the stored ending.
    if (event.messages.some((message) => message.status === "streaming")) scheduleResync(HISTORY_POLL_MS);
  }

  function requestHistory() {
    if (!isOpen() || state.conversationId === null) return;
    if (send({ type: "history", conversation_id: state.conversationId, after_id: resumeAfter() })) {
      state.awaiting.push({ kind: "history", messageId: null });
    }
  }

  function settleAnswer(kind, messageId) {
    const index = state.awaiting.findIndex((a) => a.kind === kind && (kind !== "feedback" || a.messageId === messageId));
    if (index >= 0) state.awaiting.splice(index, 1);
  }

  function scheduleResync(delay) {
    if (state.resyncTimer !== null) return;
    state.resyncTimer = window.setTimeout(() => {
      state.resyncTimer = null;
      requestHistory();
    }, delay);
  }

  // Error codes that tell of a reply which failed (they precede its `done`), not of a frame the page sent.
  const REPLY_ERRORS = new Set(["internal_error", "busy", "timeout", "engine_unavailable", "engine_stream_broken", "engine_error"]);

  function onError(event) {
    const code = String(event.code || "error");
    const detail = String(event.detail || "Something went wrong.");
    if (event.client_id) {
      const index = state.outbox.findIndex((entry) => entry.clientId === event.client_id);
      if (index >= 0) {
        const [entry] = state.outbox.splice(index, 1);
        if (code === "not_found") setConversation(null); // the conversation is no longer this reader's
        markFailed(entry, code, detail);
        flushOutbox();
        return;
      }
    }
    // Errors about a reply come unasked, just before the `done` of the reply that failed.
    const answered = REPLY_ERRORS.has(code) ? undefined : state.awaiting.shift();
    if (answered?.kind === "feedback" && feedbackFailed(answered.messageId, `Not saved: ${detail}`)) return;
    if (answered?.kind === "history") {
      if (code === "rate_limited") {
        scheduleResync(RESYNC_RETRY_MS);
        return;
      }
      if (code === "not_found") {
        // The stored conversation is not this reader's any more (signed out, or another account).
        setConversation(null);
        state.lastId = 0;
        window.sessionStorage.removeItem(STORAGE_LAST_ID);
        if (!state.rendered.size) ui.emptyState.hidden = false;
      }
    }
    const retry = Number.isFinite(event.retry_after_ms) ? ` Try again in ${Math.ceil(event.retry_after_ms / 1000)} s.` : "";
    keepScrolled(() => ui.log.appendChild(notice(code, detail + retry)));
  }

  // ---------------------------------------------------------------- outgoing messages

  function submitMessage(text) {
    if (!text.trim() || charCount(text) > state.maxChars) return;
    hideEmptyState();
    const entry = { clientId: newClientId(), text, sent: false, el: null };
    entry.el = userElement(text, null);
    entry.el.dataset.clientId = entry.clientId;
    setMessageState(entry.el, "pending", "Sending…");
    ui.log.appendChild(entry.el);
    ui.log.scrollTop = ui.log.scrollHeight;
    state.outbox.push(entry);
    flushOutbox();
  }

  function flushOutbox() {
    if (!isOpen()) return;
    for (const entry of state.outbox) {
      if (entry.sent) continue;
      // A first message creates the conversation: later ones wait for its id from the ack.
      if (state.conversationId === null && state.outbox.some((other) => other.sent)) break;
      const frame = { type: "message", text: entry.text, client_id: entry.clientId };
      if (state.conversationId !== null) frame.conversation_id = state.conversationId;
      if (!send(frame)) break;
      entry.sent = true;
    }
  }

  function markFailed(entry, code, detail) {
    const el = entry.el;
    setMessageState(el, "failed", "Not sent");
    const retryable = !UNRETRYABLE.has(code);
    const actions = retryable
      ? h("button", { type: "button", className: "link-button", onclick: () => retry(entry) }, "Retry")
      : h("button", { type: "button", className: "link-button", onclick: () => editAgain(entry) }, "Edit");
    const error = h("p", { className: "inline-error", role: "alert" }, h("span", {}, detail), " ", h("code", {}, code), " ", actions);
    el.querySelector(".message-body").appendChild(error);
  }

  function retry(entry) {
    entry.el.querySelector(".inline-error")?.remove();
    setMessageState(entry.el, "pending", "Sending…");
    entry.sent = false;
    state.outbox.push(entry);
    flushOutbox();
  }

  function editAgain(entry) {
    entry.el.remove();
    ui.input.value = entry.text;
    updateComposer();
    ui.input.focus();
  }

  // ---------------------------------------------------------------- message elements

  function hideEmptyState() {
    ui.emptyState.hidden = true;
  }

  function setMessageState(el, value, label) {
    el.dataset.state = value;
    const status = el.querySelector(".message-status");
    if (status) setText(status, label);
  }

  function userElement(text, createdAt) {
    return h(
      "article",
      { className: "message message-user", dataset: { role: "user" } },
      h(
        "div",
        { className: "message-body" },
        h("div", { className: "bubble" }, h("p", { className: "bubble-text" }, text)),
        h("footer", { className: "message-meta" }, timeElement(createdAt), h("span", { className: "message-status" }))
      )
    );
  }

  function assistantShell(replyTo) {
    return h(
      "article",
      { className: "message message-assistant", dataset: { role: "assistant", replyTo: replyTo ?? "" } },
      h("span", { className: "avatar", "aria-hidden": "true" }, "m"),
      h(
        "div",
        { className: "message-body" },
        h(
          "div",
          { className: "bubble" },
          h("div", { className: "bubble-text" }),
          h("span", { className: "typing" }, h("span", { className: "visually-hidden" }, "mediachat is writing"), h("i"), h("i"), h("i"))
        ),
        h("footer", { className: "message-meta" }, h("span", { className: "who" }, "mediachat"), timeElement(null))
      )
    );
  }

  function showTyping(questionId) {
    if (state.typing.has(questionId)) return;
    const el = assistantShell(questionId);
    el.dataset.state = "typing";
    el.setAttribute("aria-busy", "true");
    state.typing.set(questionId, el);
    keepScrolled(() => ui.log.appendChild(el));
  }

  /** Forget the replies that have not started: a new message or `stop` cancels them without a `done`. */
  function dropUnstarted() {
    for (const questionId of [...state.typing.keys()]) {
      removeTyping(questionId);
      state.pendingReplies.delete(questionId);
    }
  }

  function removeTyping(questionId) {
    const el = state.typing.get(questionId);
    if (el) el.remove();
    state.typing.delete(questionId);
  }

  /** The element of assistant message `id`: already shown, a waiting placeholder, or a new one. */
  function assistantElement(id, replyTo) {
    let el = state.rendered.get(id);
    if (el) {
      if (replyTo !== null) removeTyping(replyTo);
      return el;
    }
    let key = replyTo;
    if (key === null) key = state.typing.keys().next().value ?? null; // a token: the reply being written
    if (key !== null && state.typing.has(key)) {
      el = state.typing.get(key);
      state.typing.delete(key);
      el.dataset.replyTo = String(key);
    } else {
      el = assistantShell(replyTo);
      keepScrolled(() => ui.log.insertBefore(el, firstWaiting()));
    }
    el.dataset.messageId = String(id);
    state.rendered.set(id, el);
    return el;
  }

  /** The first element still waiting for the server (a typing placeholder or an unsent message). */
  function firstWaiting() {
    return ui.log.querySelector(".message[data-state='typing'], .message[data-state='pending']");
  }

  function insertInOrder(el, id) {
    let before = null;
    for (const [otherId, other] of state.rendered) {
      if (otherId > id && other.isConnected && (before === null || otherId < Number(before.dataset.messageId))) {
        before = other;
      }
    }
    ui.log.insertBefore(el, before ?? firstWaiting());
  }

  const STATUS_NOTES = {
    interrupted: "Stopped before the end.",
    failed: "The assistant could not answer this time.",
    streaming: "Still being written…",
  };

  function finishAssistant(el, message) {
    const status = String(message.status || "complete");
    el.dataset.state = status;
    el.setAttribute("aria-busy", String(status === "streaming"));
    const textEl = el.querySelector(".bubble-text");
    if (typeof message.text === "string") setText(textEl, message.text);
    el.querySelector(".message-extra")?.remove();
    const extra = h("div", { className: "message-extra" });
    if (STATUS_NOTES[status]) extra.appendChild(h("p", { className: "status-note" }, STATUS_NOTES[status]));
    if (typeof message.notice === "string" && message.notice) {
      extra.appendChild(h("p", { className: "status-note reply-notice" }, message.notice));
    }
    const cited = Array.isArray(message.cited) ? message.cited : [];
    if (cited.length) extra.appendChild(citedList(cited));
    if (status !== "failed" && status !== "streaming" && Number.isSafeInteger(message.id ?? message.message_id)) {
      extra.appendChild(feedbackBox(message.id ?? message.message_id, message.rating ?? null));
    }
    el.querySelector(".message-meta").before(extra);
    const timing = message.timing || {};
    if (Number.isFinite(timing.total_ms)) {
      const parts = [`whole reply after ${timing.total_ms} ms`];
      if (Number.isFinite(timing.first_token_ms)) parts.unshift(`first words after ${timing.first_token_ms} ms`);
      el.querySelector(".message-meta").title = parts.join(", ");
    }
  }

  function citedList(cited) {
    const items = cited.map((item) => {
      const href = safeHref(item.url);
      const title = String(item.title || "Untitled");
      return h("li", {}, href ? h("a", { href, target: "_blank", rel: "noopener" }, title) : h("span", {}, title));
    });
    return h("nav", { className: "cited", "aria-label": "Sources" }, h("span", { className: "cited-label" }, "Sources"), h("ul", {}, items));
  }

  function upsertFromHistory(message) {
    if (!Number.isSafeInteger(message.id)) return;
    let el = state.rendered.get(message.id);
    if (message.role === "assistant") {
      if (!el) {
        el = assistantShell(message.reply_to);
        el.dataset.messageId = String(message.id);
        const placeholder = state.typing.get(message.reply_to);
        if (placeholder) {
          placeholder.replaceWith(el);
          state.typing.delete(message.reply_to);
        } else {
          insertInOrder(el, message.id);
        }
        state.rendered.set(message.id, el);
      }
      el.querySelector(".message-meta time")?.replaceWith(timeElement(message.created_at) || "");
      finishAssistant(el, message);
      if (message.status === "streaming") {
        state.unfinished.add(message.id);
      } else {
        state.unfinished.delete(message.id);
        state.pendingReplies.delete(message.reply_to);
      }
    } else if (!el) {
      el = message.role === "user" ? userElement(String(message.text ?? ""), message.created_at) : systemElement(message);
      el.dataset.messageId = String(message.id);
      if (message.role === "user") setMessageState(el, "sent", "Sent");
      insertInOrder(el, message.id);
      state.rendered.set(message.id, el);
    }
    if (message.status !== "streaming") noteSeen(message.id);
  }

  function systemElement(message) {
    return h("p", { className: "notice", dataset: { role: String(message.role) } }, String(message.text ?? ""));
  }

  function notice(code, detail) {
    return h(
      "p",
      { className: "notice notice-error", role: "alert", dataset: { code } },
      h("span", {}, detail),
      " ",
      h("code", {}, code)
    );
  }

  // ---------------------------------------------------------------- feedback

  function feedbackBox(messageId, rating) {
    const box = h("div", { className: "feedback", dataset: { state: rating ? "saved" : "idle" } });
    const status = h("span", { className: "feedback-status", role: "status" }, rating ? "Rated" : "");
    const details = h("div", { className: "feedback-details", hidden: true });
    const rateButton = (value, emoji, label) =>
      h(
        "button",
        {
          type: "button",
          className: `rate rate-${value > 0 ? "up" : "down"}`,
          "aria-label": label,
          title: label,
          "aria-pressed": String(rating === value),
          dataset: { rating: String(value) },
          onclick: () => rate(box, messageId, value),
        },
        emoji
      );
    box.append(
      h("span", { className: "feedback-prompt" }, "Helpful?"),
      rateButton(1, "👍", "Helpful"),
      rateButton(-1, "👎", "Not helpful"),
      status,
      details
    );
    return box;
  }

  function sendFeedback(frame) {
    if (!send(frame)) return false;
    state.awaiting.push({ kind: "feedback", messageId: frame.message_id });
    return true;
  }

  /** Show on its message that a rating was not saved; false when that message is not on the page. */
  function feedbackFailed(messageId, text) {
    const box = state.rendered.get(messageId)?.querySelector(".feedback");
    if (!box) return false;
    box.dataset.state = "error";
    setText(box.querySelector(".feedback-status"), text);
    return true;
  }

  function showRating(box, rating) {
    for (const button of box.querySelectorAll(".rate")) {
      button.setAttribute("aria-pressed", String(Number(button.dataset.rating) === rating));
    }
  }

  function rate(box, messageId, rating) {
    showRating(box, rating);
    const status = box.querySelector(".feedback-status");
    if (!sendFeedback({ type: "feedback", message_id: messageId, rating })) {
      box.dataset.state = "error";
      setText(status, "Offline: rate again once reconnected");
      return;
    }
    box.dataset.state = "saving";
    setText(status, "Saving…");
    const details = box.querySelector(".feedback-details");
    details.replaceChildren(...reasonForm(box, messageId, rating));
    // A thumbs-down is worth a reason: open the form; after a thumbs-up, offer it.
    details.hidden = rating > 0;
    box.querySelector(".feedback-more")?.remove();
    if (rating > 0) {
      const more = h("button", { type: "button", className: "link-button feedback-more" }, "Add details");
      more.addEventListener("click", () => {
        details.hidden = false;
        more.remove();
        details.querySelector(".reason")?.focus();
      });
      status.after(more);
    }
  }

  function reasonForm(box, messageId, rating) {
    const chips = REASONS[rating].map(([value, label]) =>
      h(
        "button",
        {
          type: "button",
          className: "chip reason",
          "aria-pressed": "false",
          dataset: { reason: value },
          onclick: (event) => {
            const chip = event.currentTarget;
            chip.setAttribute("aria-pressed", String(chip.getAttribute("aria-pressed") !== "true"));
          },
        },
        label
      )
    );
    const commentId = `comment-${messageId}`;
    const comment = h("textarea", { id: commentId, className: "feedback-comment", rows: "2", maxlength: "2000", placeholder: "Tell us more (optional)" });
    const submit = h(
      "button",
      {
        type: "button",
        className: "button button-small",
        onclick: () => {
          const reasons = Array.from(box.querySelectorAll(".reason[aria-pressed='true']"), (chip) => chip.dataset.reason);
          const frame = { type: "feedback", message_id: messageId, rating, reasons, comment: comment.value.trim() };
          const status = box.querySelector(".feedback-status");
          if (sendFeedback(frame)) {
            box.dataset.state = "saving";
            setText(status, "Saving…");
            box.querySelector(".feedback-details").hidden = true;
            box.querySelector(".feedback-more")?.remove();
          } else {
            setText(status, "Offline: send again once reconnected");
          }
        },
      },
      "Send details"
    );
    return [
      h("div", { className: "reason-chips", role: "group", "aria-label": rating > 0 ? "What was good" : "What went wrong" }, chips),
      h("label", { className: "visually-hidden", for: commentId }, "Comment"),
      comment,
      submit,
    ];
  }

  // ---------------------------------------------------------------- recommendation cards

  function renderCards(items) {
    const cards = items.map((item) => {
      const href = safeHref(item.url);
      const title = String(item.title || "Untitled");
      const kind = String(item.kind || "");
      const kicker = h(
        "p",
        { className: "rec-kicker" },
        kind ? h("span", { className: `badge badge-${kind.replace(/[^a-z]/g, "")}` }, kindLabel(kind)) : null,
        item.section ? h("span", { className: "rec-section" }, String(item.section)) : null
      );
      return h(
        "li",
        { className: "rec-card", dataset: { contentId: String(item.id ?? "") } },
        kicker,
        h("h3", { className: "rec-title" }, href ? h("a", { href, target: "_blank", rel: "noopener" }, title) : title),
        item.summary ? h("p", { className: "rec-summary" }, String(item.summary)) : null,
        item.why ? h("p", { className: "rec-why" }, h("span", { className: "visually-hidden" }, "Why: "), String(item.why)) : null
      );
    });
    ui.cards.replaceChildren(...cards);
    ui.cardsEmpty.hidden = cards.length > 0;
    if (!cards.length) setText(ui.cardsEmpty, "Nothing in the catalog matched that yet.");
  }

  // ---------------------------------------------------------------- composer

  function updateComposer() {
    const length = charCount(ui.input.value);
    ui.count.dataset.state = length > state.maxChars ? "over" : length > state.maxChars * 0.9 ? "near" : "ok";
    setText(ui.count, `${length} / ${state.maxChars}`);
    ui.send.disabled = !ui.input.value.trim() || length > state.maxChars;
    ui.input.setAttribute("aria-invalid", String(length > state.maxChars));
    ui.input.style.height = "auto";
    ui.input.style.height = `${Math.min(ui.input.scrollHeight, 220)}px`;
  }

  function updateStop() {
    ui.stop.hidden = state.pendingReplies.size === 0;
  }

  function newConversation() {
    if (state.pendingReplies.size || state.outbox.some((entry) => entry.sent)) {
      send({ type: "stop" });
      state.discarding = true;
    }
    state.outbox = [];
    state.pendingReplies.clear();
    state.typing.clear();
    state.unfinished.clear();
    state.rendered.clear();
    setConversation(null);
    state.lastId = 0;
    window.sessionStorage.removeItem(STORAGE_LAST_ID);
    ui.log.replaceChildren(ui.emptyState);
    ui.emptyState.hidden = false;
    ui.cards.replaceChildren();
    ui.cardsEmpty.hidden = false;
    setText(ui.cardsEmpty, "Suggestions from the catalog appear here as you chat.");
    updateStop();
    ui.input.focus();
  }

  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = ui.input.value;
    if (ui.send.disabled) return;
    ui.input.value = "";
    updateComposer();
    submitMessage(text);
  });
  ui.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.composer.requestSubmit();
    }
  });
  ui.input.addEventListener("input", updateComposer);
  ui.stop.addEventListener("click", () => {
    send({ type: "stop" });
    dropUnstarted(); // a reply that has started answers with its `done`
    updateStop();
  });
  ui.newConversation.addEventListener("click", newConversation);
  for (const suggestion of document.querySelectorAll(".suggestion")) {
    suggestion.addEventListener("click", () => {
      ui.input.value = suggestion.textContent.trim();
      updateComposer();
      ui.composer.requestSubmit();
    });
  }
  window.addEventListener("online", () => {
    if (state.socket === null) connect();
  });

  // For tests and debugging: the live socket and a count of welcomes (one per (re)connection).
  const api = {
    welcomes: 0,
    get socket() {
      return state.socket;
    },
    get conversationId() {
      return state.conversationId;
    },
    get lastId() {
      return state.lastId;
    },
  };
  window.mediachat = api;

  if (state.conversationId !== null) hideEmptyState();
  updateComposer();
  connect();
})();
