/* The live feed of wiki recent changes, read from xmlrc's MUC rooms over XMPP WebSocket.
 *
 * Anonymous login (SASL ANONYMOUS), public rooms from disco#items on the MUC service,
 * each change from the <rc xmlns="urn:xmlrc:rc:1"/> payload of a groupchat message.
 * On reconnect it catches up from the room archive (XEP-0313, RSM after the last
 * archive id shown), deduplicating by the change's stable id (origin-id).
 * Change data only ever reaches the page through textContent and checked http(s) links.
 */
"use strict";
(function () {
  // Strophe's UMD build sets globals: Strophe (the namespace object), $iq, $pres.
  const Strophe = window.Strophe.Connection ? window.Strophe : window.Strophe.Strophe;
  const $iq = window.$iq;
  const $pres = window.$pres;

  const NS_RC = "urn:xmlrc:rc:1";
  const NS_SID = "urn:xmpp:sid:0";
  const NS_MAM = "urn:xmpp:mam:2";
  const NS_RSM = "http://jabber.org/protocol/rsm";
  const NS_MUC = "http://jabber.org/protocol/muc";
  const NS_MUC_USER = "http://jabber.org/protocol/muc#user";
  const NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items";
  const NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas";

  const MAX_ROWS = 1000; // rows kept in the page, oldest removed past it
  const MAX_SEEN = 20000; // stable ids remembered for deduplication
  const FIRST_PAGE = 50; // archived changes shown on a room's first join
  const PAGE_SIZE = 100; // catch-up page size
  const MAX_PAGES = 200; // catch-up pages per reconnect, at most
  const CHART_MINUTES = 30;
  const COLORS = ["#3366cc", "#dc3912", "#ff9900", "#109618", "#990099", "#0099c6", "#dd4477", "#66aa00"];

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  };

  // -- settings: query string, then /web/config.json, then the form -------------------------

  const query = new URLSearchParams(window.location.search);
  const settings = { websocket: null, domain: null, muc: null, rooms: [] };

  async function loadSettings() {
    try {
      const response = await fetch("config.json", { cache: "no-store" });
      if (response.ok) {
        const body = await response.json();
        settings.websocket = body.websocket || null;
        settings.domain = body.domain || null;
        settings.muc = body.muc || null;
      }
    } catch (err) {
      // plain static files: no config.json; the query string or the form gives the settings
    }
    if (query.get("ws")) settings.websocket = query.get("ws");
    if (query.get("domain")) settings.domain = query.get("domain");
    if (query.get("muc")) settings.muc = query.get("muc");
    roomNames = (query.get("rooms") || "")
      .split(",")
      .map((r) => r.trim())
      .filter(Boolean);
  }

  let roomNames = [];

  function roomJid(name) {
    return (name.includes("@") ? name : `${name}@${settings.muc}`).toLowerCase();
  }

  function validWebsocket(url) {
    try {
      const parsed = new URL(url);
      return parsed.protocol === "ws:" || parsed.protocol === "wss:";
    } catch (err) {
      return false;
    }
  }

  function askSettings() {
    const form = $("settings");
    $("set-ws").value = settings.websocket || "";
    $("set-domain").value = settings.domain || "";
    $("set-muc").value = settings.muc || "";
    form.hidden = false;
    setStatus("offline", "Not connected: say where the XMPP server is.");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!validWebsocket($("set-ws").value)) {
        notice("The WebSocket URL must start with ws:// or wss://.");
        return;
      }
      settings.websocket = $("set-ws").value.trim();
      settings.domain = $("set-domain").value.trim();
      settings.muc = $("set-muc").value.trim();
      const params = new URLSearchParams(window.location.search);
      params.set("ws", settings.websocket);
      params.set("domain", settings.domain);
      params.set("muc", settings.muc);
      window.history.replaceState(null, "", `?${params}`);
      form.hidden = true;
      notice(null);
      connect();
    });
  }

  // -- status and notices ---------------------------------------------------------------

  function setStatus(state, text) {
    const status = $("status");
    status.dataset.state = state;
    status.textContent = text;
  }

  function notice(text) {
    const box = $("notice");
    box.textContent = text || "";
    box.hidden = !text;
  }

  // -- rooms ------------------------------------------------------------------------------

  /** Per room JID: wanted, joined, last archive id shown, catch-up state, colour. */
  const rooms = new Map();

  function room(jid) {
    let state = rooms.get(jid);
    if (!state) {
      state = {
        jid,
        wanted: false,
        joined: false,
        lastArchiveId: null,
        catchingUp: false,
        buffer: [],
        color: COLORS[rooms.size % COLORS.length],
        perMinute: new Map(),
        name: jid.split("@")[0],
      };
      rooms.set(jid, state);
    }
    return state;
  }

  function renderRoomList(items) {
    const list = $("rooms");
    list.replaceChildren();
    for (const item of items) {
      const state = room(item.jid);
      if (item.name) state.name = item.name;
      const li = el("li");
      const label = el("label");
      const box = el("input");
      box.type = "checkbox";
      box.checked = state.wanted;
      box.dataset.room = item.jid;
      box.addEventListener("change", () => {
        state.wanted = box.checked;
        if (box.checked) join(state);
        else leave(state);
      });
      label.append(box, el("span", null, state.name));
      label.title = item.jid;
      li.append(label);
      list.append(li);
    }
    renderLegend();
  }

  function renderLegend() {
    const legend = $("legend");
    legend.replaceChildren();
    for (const state of rooms.values()) {
      if (!state.wanted) continue;
      const li = el("li");
      const swatch = el("span");
      swatch.style.background = state.color;
      li.append(swatch, document.createTextNode(state.name));
      legend.append(li);
    }
  }

  // -- the connection -------------------------------------------------------------------

  let connection = null;
  let generation = 0; // bumps on each connection: late callbacks of old ones are ignored
  let attempt = 0;
  let retryTimer = null;
  let nick = randomNick();
  let lastOnline = null;

  function randomNick() {
    const bytes = new Uint8Array(3);
    window.crypto.getRandomValues(bytes);
    return `web-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
  }

  function connect() {
    settings.rooms = roomNames.map(roomJid); // once the MUC service is known
    window.clearTimeout(retryTimer);
    retryTimer = null;
    const mine = ++generation;
    setStatus("connecting", attempt ? `Reconnecting (attempt ${attempt + 1})…` : "Connecting…");
    for (const state of rooms.values()) state.joined = false;
    connection = new Strophe.Connection(settings.websocket);
    connection.addHandler((stanza) => onMessage(mine, stanza), null, "message");
    connection.addHandler((stanza) => onPresence(mine, stanza), null, "presence");
    connection.connect(settings.domain, null, (status, condition) => {
      if (mine !== generation) return;
      if (status === Strophe.Status.CONNECTED) {
        onConnected(mine);
      } else if (status === Strophe.Status.DISCONNECTED) {
        offline(condition);
      }
    });
  }

  function offline(condition) {
    generation++;
    connection = null;
    for (const state of rooms.values()) state.joined = false;
    const delay = Math.min(30, 2 ** Math.min(attempt, 5)) * (0.5 + Math.random() * 0.5);
    attempt++;
    const since = lastOnline ? ` since ${lastOnline.toLocaleTimeString()}` : "";
    const why = condition ? ` (${condition})` : "";
    setStatus(
      "offline",
      `Offline${since}${why}: reconnecting in ${Math.ceil(delay)} s. What arrives meanwhile is fetched from the archive.`
    );
    retryTimer = window.setTimeout(connect, delay * 1000);
  }

  window.addEventListener("online", () => {
    if (retryTimer !== null) connect();
  });

  function onConnected(mine) {
    setStatus("online", `Online as a guest on ${settings.domain}.`);
    lastOnline = new Date();
    const iq = $iq({ type: "get", to: settings.muc }).c("query", { xmlns: NS_DISCO_ITEMS });
    connection.sendIQ(
      iq,
      (result) => {
        if (mine !== generation) return;
        const items = Array.from(result.getElementsByTagNameNS(NS_DISCO_ITEMS, "item"), (item) => ({
          jid: (item.getAttribute("jid") || "").toLowerCase(),
          name: item.getAttribute("name") || "",
        })).filter((item) => item.jid.includes("@"));
        for (const jid of settings.rooms) {
          if (!items.some((item) => item.jid === jid)) items.push({ jid, name: "" });
        }
        chooseRooms(items);
      },
      () => {
        if (mine !== generation) return;
        notice(`Could not list the rooms of ${settings.muc}.`);
        chooseRooms(settings.rooms.map((jid) => ({ jid, name: "" })));
      },
      20000
    );
  }

  let chosen = false;

  function chooseRooms(items) {
    if (!chosen) {
      chosen = true;
      // The query string's rooms, else the first few public ones.
      const wanted = settings.rooms.length ? settings.rooms : items.slice(0, 5).map((i) => i.jid);
      for (const jid of wanted) room(jid).wanted = true;
    }
    renderRoomList(items);
    for (const state of rooms.values()) if (state.wanted) join(state);
  }

  function join(state) {
    if (!connection || state.joined) return;
    connection.send(
      $pres({ to: `${state.jid}/${nick}` })
        .c("x", { xmlns: NS_MUC })
        .c("history", { maxstanzas: "0" })
    );
    renderLegend();
  }

  function leave(state) {
    if (connection && state.joined) {
      connection.send($pres({ to: `${state.jid}/${nick}`, type: "unavailable" }));
    }
    state.joined = false;
    state.buffer = [];
    renderLegend();
  }

  function onPresence(mine, stanza) {
    if (mine !== generation) return true;
    const from = stanza.getAttribute("from") || "";
    const jid = Strophe.getBareJidFromJid(from).toLowerCase();
    const state = rooms.get(jid);
    if (!state || !state.wanted) return true;
    if (stanza.getAttribute("type") === "error") {
      if (stanza.getElementsByTagNameNS(NS_STANZAS, "conflict").length) {
        nick = randomNick();
        join(state);
      } else {
        notice(`Could not join ${state.name}.`);
      }
      return true;
    }
    const self = Array.from(stanza.getElementsByTagNameNS(NS_MUC_USER, "status")).some(
      (s) => s.getAttribute("code") === "110"
    );
    if (self && stanza.getAttribute("type") !== "unavailable" && !state.joined) {
      state.joined = true;
      attempt = 0;
      catchUp(mine, state);
    }
    return true;
  }

  // -- the archive (XEP-0313) -----------------------------------------------------------

  const queries = new Map(); // queryid -> archived messages received for it
  let queryCounter = 0;

  function catchUp(mine, state) {
    state.catchingUp = true;
    state.buffer = [];
    const startedAfter = state.lastArchiveId;
    let pages = 0;
    const page = (after) => {
      const queryid = `q${++queryCounter}`;
      queries.set(queryid, []);
      const iq = $iq({ type: "set", to: state.jid })
        .c("query", { xmlns: NS_MAM, queryid })
        .c("set", { xmlns: NS_RSM })
        .c("max")
        .t(String(after === null ? FIRST_PAGE : PAGE_SIZE))
        .up();
      if (after === null) iq.c("before");
      else iq.c("after").t(after);
      connection.sendIQ(
        iq,
        (result) => {
          const got = queries.get(queryid) || [];
          queries.delete(queryid);
          if (mine !== generation) return;
          for (const [archiveId, message] of got) handleChange(state, message, archiveId, true);
          const fin = result.getElementsByTagNameNS(NS_MAM, "fin")[0];
          const complete = !fin || fin.getAttribute("complete") === "true";
          const last = fin && fin.getElementsByTagNameNS(NS_RSM, "last")[0];
          pages++;
          if (after !== null && !complete && last && pages < MAX_PAGES) {
            page(last.textContent);
          } else {
            if (after !== null && !complete) {
              notice(`Too much to catch up in ${state.name}: only the first ${pages * PAGE_SIZE} changes are shown.`);
            }
            done();
          }
        },
        (error) => {
          queries.delete(queryid);
          if (mine !== generation) return;
          if (error && after !== null && error.getElementsByTagNameNS(NS_STANZAS, "item-not-found").length) {
            notice(
              `The archive of ${state.name} no longer reaches back to the last change shown: ` +
                "some changes made while this page was offline are missing."
            );
            page(null); // the latest instead
          } else {
            if (startedAfter !== null) {
              notice(`Could not read the archive of ${state.name}: changes made while offline may be missing.`);
            }
            done();
          }
        },
        20000
      );
    };
    const done = () => {
      state.catchingUp = false;
      const live = state.buffer;
      state.buffer = [];
      for (const [archiveId, message] of live) handleChange(state, message, archiveId);
    };
    page(startedAfter);
  }

  // -- messages -------------------------------------------------------------------------

  function onMessage(mine, stanza) {
    if (mine !== generation) return true;
    const result = child(stanza, NS_MAM, "result");
    if (result) {
      const list = queries.get(result.getAttribute("queryid"));
      const inner = result.getElementsByTagName("message")[0];
      if (list && inner) list.push([result.getAttribute("id"), inner]);
      return true;
    }
    if (stanza.getAttribute("type") !== "groupchat") return true;
    const jid = Strophe.getBareJidFromJid(stanza.getAttribute("from") || "").toLowerCase();
    const state = rooms.get(jid);
    if (!state || !state.joined) return true;
    let archiveId = null;
    for (const sid of stanza.getElementsByTagNameNS(NS_SID, "stanza-id")) {
      if ((sid.getAttribute("by") || "").toLowerCase() === jid) archiveId = sid.getAttribute("id");
    }
    if (state.catchingUp) state.buffer.push([archiveId, stanza]);
    else handleChange(state, stanza, archiveId);
    return true;
  }

  function child(node, ns, name) {
    for (const c of node.children) if (c.namespaceURI === ns && c.localName === name) return c;
    return null;
  }

  const seen = new Set();
  let paused = false;
  const waiting = [];

  const shown = { live: 0, archive: 0 }; // changes shown, by where they came from

  function handleChange(state, message, archiveId, fromArchive = false) {
    if (archiveId) state.lastArchiveId = archiveId;
    const rc = message.getElementsByTagNameNS(NS_RC, "rc")[0];
    if (!rc) return;
    const change = parseChange(rc, message);
    const key = change.stableId || (archiveId ? `archive:${state.jid}:${archiveId}` : null);
    if (key) {
      if (seen.has(key)) return;
      seen.add(key);
      if (seen.size > MAX_SEEN) seen.delete(seen.values().next().value);
    }
    change.room = state.jid;
    shown[fromArchive ? "archive" : "live"]++;
    countForChart(state, change);
    if (paused) {
      waiting.push(change);
      updatePauseButton();
    } else {
      show(change);
    }
  }

  function parseChange(rc, message) {
    const a = (name) => rc.getAttribute(name);
    const has = (name) => rc.hasAttribute(name);
    const int = (name) => {
      const value = parseInt(a(name), 10);
      return Number.isFinite(value) ? value : null;
    };
    const origin = message.getElementsByTagNameNS(NS_SID, "origin-id")[0];
    const wiki = a("wikiid") || "";
    const rcid = a("rcid");
    return {
      stableId: origin ? origin.getAttribute("id") : rcid ? `${wiki}/${rcid}` : null,
      wiki,
      wikiName: a("server_name") || wiki,
      type: a("type") || "",
      ns: int("ns"),
      title: a("title") || "",
      user: a("user") || "",
      comment: a("comment") || "",
      timestamp: a("timestamp") || "",
      revid: int("revid"),
      oldRevid: int("old_revid"),
      oldlen: int("oldlen"),
      newlen: int("newlen"),
      serverUrl: a("server_url") || "",
      scriptPath: a("server_script_path") || "",
      bot: has("bot"),
      minor: has("minor"),
      isNew: has("new") || a("type") === "new",
      anon: has("anon"),
      patrolled: has("patrolled") ? true : has("unpatrolled") ? false : null,
      logtype: a("logtype"),
      logaction: a("logaction"),
      logComment: a("log_action_comment"),
    };
  }

  // -- rendering ------------------------------------------------------------------------

  function safeUrl(text) {
    try {
      const url = new URL(text.startsWith("//") ? `https:${text}` : text);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (err) {
      return null;
    }
  }

  function changeUrl(change) {
    if (!change.serverUrl) return null;
    const base = `${change.serverUrl}${change.scriptPath}/index.php`;
    if (change.type === "edit" && change.revid) {
      const old = change.oldRevid ? `&oldid=${change.oldRevid}` : "";
      return safeUrl(`${base}?diff=${change.revid}${old}`);
    }
    if (change.type === "new" && change.revid) return safeUrl(`${base}?oldid=${change.revid}`);
    return safeUrl(`${base}?title=${encodeURIComponent(change.title.replace(/ /g, "_"))}`);
  }

  function sizeChange(change) {
    return change.oldlen !== null || change.newlen !== null ? (change.newlen || 0) - (change.oldlen || 0) : null;
  }

  const rowData = new WeakMap();

  function show(change) {
    const row = el("li", "change");
    row.dataset.id = change.stableId || "";
    row.dataset.room = change.room;
    row.dataset.type = change.type;
    rowData.set(row, change);

    const when = new Date(change.timestamp);
    const time = el("time", "time", Number.isNaN(when.getTime()) ? change.timestamp : when.toLocaleTimeString());
    time.dateTime = change.timestamp;
    time.title = change.timestamp;

    const main = el("div", "main");
    const url = changeUrl(change);
    const title = el(url ? "a" : "span", "title", change.title);
    if (url) {
      title.href = url;
      title.rel = "noopener noreferrer";
      title.target = "_blank";
    }
    main.append(title);
    const flags = el("span", "flags");
    const flag = (name, text, label) => {
      const f = el("abbr", `flag flag-${name}`, text);
      f.title = label;
      f.dataset.flag = name;
      flags.append(f);
    };
    if (change.isNew) flag("new", "N", "new page");
    if (change.minor) flag("minor", "m", "minor edit");
    if (change.bot) flag("bot", "b", "bot");
    if (change.patrolled === true) flag("patrolled", "✓", "patrolled");
    if (change.patrolled === false) flag("unpatrolled", "!", "unpatrolled");
    main.append(flags, el("span", "user", change.user ? `· ${change.user}` : ""));
    const user = main.lastChild;
    user.dataset.user = change.user;
    if (change.type === "log") {
      const text = change.logComment || [change.logtype, change.logaction].filter(Boolean).join("/");
      main.append(el("div", "comment log", text));
    } else {
      main.append(el("div", "comment", change.comment));
    }
    main.append(el("div", "wiki", `${change.wikiName} · ${rooms.get(change.room).name}`));

    const delta = sizeChange(change);
    const size = el("span", "size", delta === null ? "" : delta > 0 ? `+${delta}` : String(delta));
    if (delta !== null) {
      const magnitude = Math.abs(delta);
      const scale = magnitude < 100 ? 1 : magnitude < 1000 ? 2 : magnitude < 10000 ? 3 : 4;
      size.classList.add(delta > 0 ? "plus" : delta < 0 ? "minus" : "zero", `s${scale}`);
      size.title = `${delta} bytes`;
    }

    row.append(time, main, size);
    row.hidden = !matches(change);
    const feed = $("feed");
    feed.prepend(row);
    while (feed.children.length > MAX_ROWS) feed.lastElementChild.remove();
  }

  // -- filters and pause ----------------------------------------------------------------

  const filters = { ns: null, type: "", bots: true, user: "", title: "", size: 0 };

  function readFilters() {
    const ns = $("f-ns").value.trim();
    filters.ns = ns
      ? ns
          .split(/[\s,]+/)
          .map((n) => parseInt(n, 10))
          .filter(Number.isFinite)
      : null;
    filters.type = $("f-type").value;
    filters.bots = $("f-bots").checked;
    filters.user = $("f-user").value.trim().toLowerCase();
    filters.title = $("f-title").value.trim().toLowerCase();
    filters.size = Math.max(0, parseInt($("f-size").value, 10) || 0);
  }

  function matches(change) {
    if (filters.ns && !filters.ns.includes(change.ns)) return false;
    if (filters.type && change.type !== filters.type) return false;
    if (!filters.bots && change.bot) return false;
    if (filters.user && !change.user.toLowerCase().includes(filters.user)) return false;
    if (filters.title && !change.title.toLowerCase().includes(filters.title)) return false;
    if (filters.size) {
      const delta = sizeChange(change);
      if (delta === null || Math.abs(delta) < filters.size) return false;
    }
    return true;
  }

  function applyFilters() {
    readFilters();
    for (const row of $("feed").children) {
      const change = rowData.get(row);
      if (change) row.hidden = !matches(change);
    }
  }

  function updatePauseButton() {
    const button = $("pause");
    button.setAttribute("aria-pressed", String(paused));
    button.textContent = paused ? `Resume (${waiting.length} waiting)` : "Pause";
  }

  function togglePause() {
    paused = !paused;
    if (!paused) {
      for (const change of waiting.splice(0)) show(change);
    }
    updatePauseButton();
  }

  // -- the chart: changes per minute per room, by change time -----------------------------

  function countForChart(state, change) {
    const when = Date.parse(change.timestamp);
    if (Number.isNaN(when)) return;
    const minute = Math.floor(when / 60000);
    state.perMinute.set(minute, (state.perMinute.get(minute) || 0) + 1);
    const oldest = Math.floor(Date.now() / 60000) - CHART_MINUTES;
    for (const key of state.perMinute.keys()) if (key < oldest) state.perMinute.delete(key);
    scheduleChart();
  }

  let chartPending = false;

  function scheduleChart() {
    if (chartPending) return;
    chartPending = true;
    window.requestAnimationFrame(() => {
      chartPending = false;
      drawChart();
    });
  }

  function drawChart() {
    const canvas = $("chart");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 600;
    const height = canvas.clientHeight || 120;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const now = Math.floor(Date.now() / 60000);
    const shown = Array.from(rooms.values()).filter((s) => s.wanted);
    let top = 1;
    for (const state of shown) for (const count of state.perMinute.values()) top = Math.max(top, count);
    const style = getComputedStyle(document.body);
    ctx.fillStyle = style.color;
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillText(`${top}/min`, 4, 12);
    ctx.fillText(`${CHART_MINUTES} min ago`, 4, height - 4);
    ctx.fillText("now", width - 26, height - 4);
    const x = (i) => 4 + ((width - 8) * i) / CHART_MINUTES;
    const y = (count) => height - 16 - ((height - 32) * count) / top;
    for (const state of shown) {
      ctx.strokeStyle = state.color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      for (let i = 0; i <= CHART_MINUTES; i++) {
        const count = state.perMinute.get(now - CHART_MINUTES + i) || 0;
        if (i === 0) ctx.moveTo(x(i), y(count));
        else ctx.lineTo(x(i), y(count));
      }
      ctx.stroke();
    }
  }

  // -- start ------------------------------------------------------------------------------

  async function start() {
    for (const id of ["f-ns", "f-type", "f-bots", "f-user", "f-title", "f-size"]) {
      $(id).addEventListener("input", applyFilters);
      $(id).addEventListener("change", applyFilters);
    }
    $("filters").addEventListener("submit", (event) => event.preventDefault());
    $("pause").addEventListener("click", togglePause);
    window.setInterval(drawChart, 10000);
    window.addEventListener("resize", scheduleChart);
    await loadSettings();
    if (!settings.websocket || !validWebsocket(settings.websocket) || !settings.domain || !settings.muc) {
      askSettings();
      return;
    }
    connect();
  }

  // A handle for people debugging the page (and its browser test): read-only views.
  window.xmlrcPage = {
    get connection() {
      return connection;
    },
    get shown() {
      return { ...shown };
    },
    get rooms() {
      return Array.from(rooms.values(), (s) => ({ jid: s.jid, joined: s.joined, lastArchiveId: s.lastArchiveId }));
    },
  };

  start();
})();
