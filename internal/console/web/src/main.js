// The sandboxd web console: sign in with the API token, list, create and
// destroy sandboxes, and work in one: a terminal (xterm.js over the PTY
// WebSocket), files, processes and exposed ports. Everything goes through
// the public API (api.js).
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import { API } from "./api.js";

const $ = (sel) => document.querySelector(sel);
const TOKEN_KEY = "sandboxd.token";

const state = {
  api: null,
  selected: null, // sandbox ID
  tab: "terminal",
  listTimer: null,
};

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function showError(sel, err) {
  $(sel).textContent = err ? String(err.message || err) : "";
}

// latest resolves to call's answer, or to null when the same list was
// asked for again while this call ran: the browser's connections can
// answer out of order (a list asked for while a process ran, answered
// after the one asked for when it ended), and an older answer must never
// replace a newer one on screen.
const asked = new Map();
async function latest(list, call) {
  const ticket = (asked.get(list) ?? 0) + 1;
  asked.set(list, ticket);
  const answer = await call;
  return asked.get(list) === ticket ? answer : null;
}

function formatSize(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let i = -1;
  do {
    n /= 1024;
    i++;
  } while (n >= 1024 && i < units.length - 1);
  return `${n.toFixed(1)} ${units[i]}`;
}

// ---- sign in ----

async function signIn(token) {
  const api = new API(token);
  const h = await api.health();
  state.api = api;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#daemon-version").textContent = `${h.version} · ${h.runtime}`;
  $("#login-view").hidden = true;
  $("#main-view").hidden = false;
  await refreshList();
  state.listTimer = setInterval(() => refreshList().catch(() => {}), 5000);
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError("#login-error", null);
  try {
    await signIn($("#token").value.trim());
  } catch (err) {
    showError("#login-error", err.status === 401 ? "That token is not valid." : err);
  }
});
$("#logout").addEventListener("click", signOut);

// ---- sandboxes ----

async function refreshList() {
  const answer = await latest("sandboxes", state.api.list());
  if (!answer) return;
  const { sandboxes } = answer;
  const ul = $("#sandbox-list");
  ul.replaceChildren(
    ...sandboxes.map((sb) =>
      el(
        "li",
        { class: sb.id === state.selected ? "selected" : "", dataset: { sandbox: sb.id }, onclick: () => select(sb.id) },
        el("span", { class: "name" }, sb.id),
        el("span", { class: `badge ${sb.status}` }, sb.status),
      ),
    ),
  );
  const current = sandboxes.find((sb) => sb.id === state.selected);
  if (current) showSandbox(current);
  return sandboxes;
}

function showSandbox(sb) {
  $("#sb-id").textContent = sb.id;
  const status = $("#sb-status");
  status.textContent = sb.status;
  status.className = `badge ${sb.status}`;
  const meta = [sb.image, sb.runtime, sb.network?.address].filter(Boolean).join(" · ");
  $("#sb-meta").textContent = meta;
}

$("#create-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError("#create-error", null);
  const id = $("#new-id").value.trim();
  try {
    await state.api.ensure(id);
    $("#new-id").value = "";
    await refreshList();
    select(id);
  } catch (err) {
    showError("#create-error", err);
  }
});

$("#destroy").addEventListener("click", async () => {
  const id = state.selected;
  if (!id || !confirm(`Destroy sandbox ${id} and everything in it?`)) return;
  try {
    closeTerminal();
    await state.api.destroy(id);
    state.selected = null;
    $("#sandbox-view").hidden = true;
    $("#empty").hidden = false;
    await refreshList();
  } catch (err) {
    alert(err.message);
  }
});

function select(id) {
  if (state.selected === id) return;
  closeTerminal();
  state.selected = id;
  $("#empty").hidden = true;
  $("#sandbox-view").hidden = false;
  for (const li of document.querySelectorAll("#sandbox-list li")) {
    li.classList.toggle("selected", li.dataset.sandbox === id);
  }
  $("#sb-id").textContent = id;
  $("#sb-status").textContent = "";
  $("#sb-meta").textContent = "";
  refreshList().catch(() => {}); // fills in the status
  stopFollowing();
  $("#log-output").replaceChildren();
  $("#log-title").textContent = "Logs";
  $("#log-status").textContent = "";
  $("#viewer").hidden = true;
  $("#path").value = "/workspace";
  switchTab(state.tab, true);
}

// ---- tabs ----

function switchTab(tab, force = false) {
  if (tab === state.tab && !force) return;
  state.tab = tab;
  for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("active", b.dataset.tab === tab);
  for (const t of ["terminal", "files", "processes", "ports"]) $(`#tab-${t}`).hidden = t !== tab;
  if (tab === "terminal") openTerminal();
  if (tab === "files") listFiles().catch((err) => showError("#files-error", err));
  if (tab === "processes") listProcesses().catch((err) => showError("#proc-error", err));
  if (tab === "ports") listPorts().catch((err) => showError("#ports-error", err));
}

for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", () => switchTab(b.dataset.tab));

// ---- terminal ----

const term = {
  xterm: null,
  fit: null,
  ws: null,
  sandbox: null,
  onResize: null,
};

function ensureXterm() {
  if (term.xterm) return;
  term.xterm = new Terminal({
    cursorBlink: true,
    fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace",
    fontSize: 14,
    scrollback: 5000,
    theme: { background: "#0f172a" },
  });
  term.fit = new FitAddon();
  term.xterm.loadAddon(term.fit);
  term.xterm.open($("#terminal"));
  const encoder = new TextEncoder();
  term.xterm.onData((data) => {
    if (term.ws?.readyState === WebSocket.OPEN) term.ws.send(encoder.encode(data));
  });
  term.xterm.onResize(({ cols, rows }) => {
    if (term.ws?.readyState === WebSocket.OPEN) term.ws.send(JSON.stringify({ type: "resize", cols, rows }));
  });
  new ResizeObserver(() => {
    if (!$("#tab-terminal").hidden) fitTerminal();
  }).observe($("#terminal"));
}

// fitTerminal sizes the terminal, and so the shell's screen, to its box,
// unless the box has collapsed for a moment (a page laid out anew, as a
// full-page capture does, showed it with no width: the fit addon then
// proposes its floor, 2 columns). A shell resized to that and back
// redraws its prompt by erasing the lines above it (bash erased 12), so
// the screen, and the replay a client attaching later gets, lost them.
const MIN_FIT_COLS = 10;
function fitTerminal() {
  const dims = term.fit.proposeDimensions();
  if (!dims || dims.cols < MIN_FIT_COLS) return;
  term.fit.fit();
}

function openTerminal() {
  ensureXterm();
  const id = state.selected;
  if (term.ws && term.sandbox === id && term.ws.readyState <= WebSocket.OPEN) {
    fitTerminal();
    term.xterm.focus();
    return;
  }
  closeTerminal();
  term.sandbox = id;
  term.xterm.reset();
  fitTerminal();
  const status = $("#term-status");
  status.textContent = "connecting…";
  // One shared terminal per sandbox for the console: opening it again
  // (another tab, a reload) attaches to it and shows the recent screen.
  const ws = new WebSocket(
    state.api.terminalURL(id, { terminal: "console", cols: term.xterm.cols, rows: term.xterm.rows }),
    state.api.terminalProtocols(),
  );
  ws.binaryType = "arraybuffer";
  term.ws = ws;
  ws.onmessage = (ev) => {
    if (ws !== term.ws) return;
    if (typeof ev.data !== "string") {
      term.xterm.write(new Uint8Array(ev.data));
      return;
    }
    const msg = JSON.parse(ev.data);
    if (msg.type === "ready") {
      status.textContent = `${msg.created ? "started" : "attached to"} terminal "${msg.terminal}" (pid ${msg.pid})`;
      ws.send(JSON.stringify({ type: "resize", cols: term.xterm.cols, rows: term.xterm.rows }));
      term.xterm.focus();
    } else if (msg.type === "exit") {
      status.textContent = `the shell exited with status ${msg.exitCode}`;
      term.xterm.write(`\r\n\x1b[2m[exited with status ${msg.exitCode}; Reconnect starts a new shell]\x1b[0m\r\n`);
    } else if (msg.type === "error") {
      status.textContent = `${msg.code}: ${msg.message}`;
    }
  };
  ws.onclose = (ev) => {
    if (ws !== term.ws) return;
    if (!status.textContent.startsWith("the shell exited")) {
      status.textContent = ev.code === 1000 ? "disconnected" : `disconnected (${ev.code}${ev.reason ? ": " + ev.reason : ""})`;
    }
  };
}

function closeTerminal() {
  if (term.ws) {
    const ws = term.ws;
    term.ws = null;
    ws.close(1000);
  }
}

$("#term-reconnect").addEventListener("click", () => {
  closeTerminal();
  openTerminal();
});

// ---- files ----
//
// Files through the file API: the listing as JSON, views and downloads as
// raw bytes (a view reads only the first MiB), uploads streamed as raw
// bytes.

async function listFiles() {
  showError("#files-error", null);
  const dir = $("#path").value.trim() || "/";
  const res = await latest("files", state.api.listFiles(state.selected, dir));
  if (!res) return;
  const entries = res.files
    .map((f) => ({ ...f, isDir: f.type === "directory" }))
    .sort((a, b) => b.isDir - a.isDir || a.name.localeCompare(b.name));
  $("#file-list").replaceChildren(
    ...entries.map((e) => {
      const path = e.absolutePath;
      const name = el("a", { href: "#", class: e.isDir ? "dir" : "file" }, e.isDir ? `${e.name}/` : e.name);
      name.addEventListener("click", (ev) => {
        ev.preventDefault();
        if (e.isDir) {
          $("#path").value = path;
          listFiles().catch((err) => showError("#files-error", err));
        } else {
          viewFile(path).catch((err) => showError("#files-error", err));
        }
      });
      const actions = el("td");
      if (!e.isDir) {
        actions.append(
          el("button", { class: "link", onclick: () => downloadFile(path).catch((err) => showError("#files-error", err)) }, "Download"),
        );
      }
      return el(
        "tr",
        { dataset: { file: e.name } },
        el("td", {}, name),
        el("td", {}, e.isDir ? "" : formatSize(e.size)),
        el("td", {}, new Date(e.modifiedAt).toLocaleString()),
        el("td", { class: "mono" }, e.mode),
        actions,
      );
    }),
  );
}

async function viewFile(path) {
  const limit = 1 << 20;
  const bytes = await state.api.readFile(state.selected, path, limit + 1);
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(0, limit));
  } catch {
    text = `(binary file, ${formatSize(bytes.length)}${bytes.length > limit ? "+" : ""}; use Download)`;
  }
  if (bytes.length > limit) text += "\n… (only the first MiB is shown)";
  $("#viewer-name").textContent = path;
  $("#viewer-body").textContent = text;
  $("#viewer").hidden = false;
}

$("#viewer-close").addEventListener("click", () => ($("#viewer").hidden = true));

async function downloadFile(path) {
  const bytes = await state.api.readFile(state.selected, path);
  const url = URL.createObjectURL(new Blob([bytes]));
  const a = el("a", { href: url, download: path.split("/").pop() });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function uploadFiles() {
  showError("#files-error", null);
  const dir = $("#path").value.trim() || "/";
  for (const file of $("#file-input").files) {
    const target = dir.endsWith("/") ? dir + file.name : `${dir}/${file.name}`;
    await state.api.writeFile(state.selected, target, file);
  }
  $("#file-input").value = "";
  await listFiles();
}

$("#path-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  listFiles().catch((err) => showError("#files-error", err));
});
$("#path-up").addEventListener("click", () => {
  const p = $("#path").value.replace(/\/+$/, "");
  $("#path").value = p.slice(0, p.lastIndexOf("/")) || "/";
  listFiles().catch((err) => showError("#files-error", err));
});
$("#upload").addEventListener("click", () => uploadFiles().catch((err) => showError("#files-error", err)));

// ---- processes ----
//
// Background processes through the process API: start, list, kill, and
// their logs followed live (what they printed so far first).

const logs = { controller: null, pid: null };

async function listProcesses() {
  showError("#proc-error", null);
  const answer = await latest("processes", state.api.processes(state.selected));
  if (!answer) return;
  const { processes } = answer;
  $("#proc-list").replaceChildren(
    ...processes.map((p) => {
      const status = p.status + (p.exitCode !== undefined && p.exitCode !== null ? ` (${p.exitCode})` : "");
      const actions = el("td", {},
        el("button", { class: "link", onclick: () => followLogs(p.id) }, "Logs"),
        p.status === "running" || p.status === "starting"
          ? el("button", {
            class: "link",
            onclick: async () => {
              try {
                await state.api.killProcess(state.selected, p.id);
                setTimeout(() => listProcesses().catch(() => {}), 300);
              } catch (err) {
                showError("#proc-error", err);
              }
            },
          }, "Kill")
          : "",
      );
      return el("tr", { dataset: { process: p.id } },
        el("td", { class: "mono" }, p.id), el("td", {}, p.pid || ""), el("td", {}, status),
        el("td", {}, new Date(p.startTime).toLocaleTimeString()), el("td", { class: "mono" }, p.command), actions);
    }),
  );
  if ($("#ps-details").open) listAllProcesses().catch((err) => showError("#ps-error", err));
}

async function listAllProcesses() {
  showError("#ps-error", null);
  const res = await latest("ps", state.api.exec(state.selected, "ps -eo pid=,ppid=,user=,stat=,etime=,args= --sort=pid"));
  if (!res) return;
  if (res.exitCode !== 0) throw new Error(new TextDecoder().decode(res.stderrBytes).trim());
  const rows = new TextDecoder()
    .decode(res.stdoutBytes)
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => l.trim().split(/\s+/));
  $("#ps-list").replaceChildren(
    ...rows.map(([pid, ppid, user, stat, etime, ...args]) =>
      el("tr", {}, el("td", {}, pid), el("td", {}, ppid), el("td", {}, user), el("td", {}, stat), el("td", {}, etime),
        el("td", { class: "mono" }, args.join(" "))),
    ),
  );
}

function stopFollowing() {
  logs.controller?.abort();
  logs.controller = null;
  logs.pid = null;
}

async function followLogs(pid) {
  stopFollowing();
  const controller = new AbortController();
  logs.controller = controller;
  logs.pid = pid;
  const out = $("#log-output");
  out.replaceChildren();
  $("#log-title").textContent = `Logs of ${pid}`;
  $("#log-status").textContent = "following…";
  const append = (text, cls) => {
    out.append(el("span", cls ? { class: cls } : {}, text));
    out.scrollTop = out.scrollHeight;
  };
  const decode = (e) => (e.encoding === "base64" ? new TextDecoder().decode(Uint8Array.from(atob(e.data), (c) => c.charCodeAt(0))) : e.data);
  try {
    await state.api.followProcess(state.selected, pid, (e) => {
      if (controller !== logs.controller) return;
      if (e.type === "stdout") append(decode(e));
      else if (e.type === "stderr") append(decode(e), "stderr");
      else if (e.type === "exit") {
        append(`\n[${e.status}${e.exitCode !== undefined && e.exitCode !== null ? ` with status ${e.exitCode}` : ""}]\n`, "muted");
        $("#log-status").textContent = "ended";
        listProcesses().catch((err) => showError("#proc-error", err));
      } else if (e.type === "error") append(`\n[${e.code}: ${e.message}]\n`, "stderr");
    }, controller.signal);
  } catch (err) {
    if (err.name !== "AbortError") append(`\n[${err.message}]\n`, "stderr");
  }
}

$("#start-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError("#proc-error", null);
  const command = $("#start-command").value.trim();
  if (!command) return;
  try {
    const p = await state.api.startProcess(state.selected, command);
    $("#start-command").value = "";
    await listProcesses();
    followLogs(p.id);
  } catch (err) {
    showError("#proc-error", err);
  }
});
$("#proc-refresh").addEventListener("click", () => listProcesses().catch((err) => showError("#proc-error", err)));
$("#ps-details").addEventListener("toggle", () => {
  if ($("#ps-details").open) listAllProcesses().catch((err) => showError("#ps-error", err));
});

// ---- ports ----

async function listPorts() {
  showError("#ports-error", null);
  const answer = await latest("ports", state.api.ports(state.selected));
  if (!answer) return;
  const { ports } = answer;
  $("#port-list").replaceChildren(
    ...ports.map((p) => {
      const link = el("a", { href: p.url, target: "_blank", rel: "noopener noreferrer", dataset: { port: String(p.port) } }, p.url);
      if (!p.public) {
        // A private preview needs a signed link: mint one on click.
        link.addEventListener("click", async (ev) => {
          ev.preventDefault();
          try {
            const l = await state.api.link(state.selected, p.port);
            window.open(l.url, "_blank", "noopener,noreferrer");
          } catch (err) {
            showError("#ports-error", err);
          }
        });
      }
      return el(
        "tr",
        {},
        el("td", {}, p.port),
        el("td", {}, p.name || "–"),
        el("td", {}, p.public ? "public" : "private"),
        el("td", {}, link),
        el("td", {}, el("button", {
          class: "link",
          onclick: async () => {
            try {
              await state.api.unexpose(state.selected, p.port);
              await listPorts();
            } catch (err) {
              showError("#ports-error", err);
            }
          },
        }, "Unexpose")),
      );
    }),
  );
}

$("#expose-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError("#ports-error", null);
  try {
    await state.api.expose(state.selected, {
      port: Number($("#expose-port").value),
      name: $("#expose-name").value.trim() || undefined,
      public: !$("#expose-private").checked,
    });
    $("#expose-port").value = "";
    $("#expose-name").value = "";
    await listPorts();
  } catch (err) {
    showError("#ports-error", err);
  }
});

// ---- start ----

(async () => {
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    try {
      await signIn(saved);
      return;
    } catch {
      sessionStorage.removeItem(TOKEN_KEY);
    }
  }
  $("#login-view").hidden = false;
  $("#token").focus();
})();
