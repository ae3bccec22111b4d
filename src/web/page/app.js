// loopchat's page: one WebSocket, one protocol line per message (frames dialect).
// User text only ever goes into the page through textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const log = $("log");
let socket = null;
let name = "";
let room = "#lobby";
let retry = 500;
const members = new Set();

function line(text, kind) {
  const p = document.createElement("p");
  if (kind) p.className = kind;
  p.textContent = text;
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.appendChild(p);
  while (log.childElementCount > 2000) log.firstChild.remove();
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function showMembers() {
  const ul = $("members");
  ul.replaceChildren(...[...members].sort((a, b) => a.localeCompare(b)).map((m) => {
    const li = document.createElement("li");
    li.textContent = m;
    return li;
  }));
}

function status(text, ok) {
  $("status").textContent = text;
  $("status").className = ok ? "ok" : "down";
}

function send(frame) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(frame);
}

function time(ms) {
  const d = new Date(Number(ms));
  return d.toISOString().slice(11, 16);
}

function receive(frame) {
  const at = frame.indexOf(":");
  const verb = frame.slice(0, at);
  const rest = frame.slice(at + 1);
  const two = (s) => { const i = s.indexOf(":"); return [s.slice(0, i), s.slice(i + 1)]; };
  switch (verb) {
    case "SAY": { const [from, text] = two(rest); line(`<${from}> ${text}`); break; }
    case "MSG": { const [from, text] = two(rest); line(`*${from}* ${text}`, "private"); break; }
    case "JOIN": members.add(rest); showMembers(); line(`*** ${rest} joined`, "presence"); break;
    case "LEAVE": members.delete(rest); showMembers(); line(`*** ${rest} left`, "presence"); break;
    case "HISTORY": {
      const [, r1] = two(rest);
      const [ms, r2] = two(r1);
      const [from, text] = two(r2);
      line(`[${time(ms)}] <${from}> ${text}`, "history");
      break;
    }
    case "ERROR": line(`[error] ${rest}`, "error"); break;
    case "SERVER": server(rest); break;
    default: line(frame);
  }
}

function server(text) {
  let m;
  if ((m = text.match(/^you are (\S+) in (#\S+)$/)) || (m = text.match(/^logged in as (\S+)$/))) {
    name = m[1];
    if (m[2]) enter(m[2]);
  } else if ((m = text.match(/^you are now in (#\S+)$/))) {
    enter(m[1]);
  } else if ((m = text.match(/^(#\S+) \((\d+)\):(.*)$/))) {
    members.clear();
    m[3].split(" ").filter((n) => n && !n.startsWith("…")).forEach((n) => members.add(n));
    showMembers();
  } else if ((m = text.match(/^rooms \(\d+\):(.*)$/))) {
    const ul = $("rooms");
    ul.replaceChildren(...m[1].split(/ (?=#)/).filter(Boolean).map((r) => {
      const li = document.createElement("li");
      li.textContent = r.trim();
      return li;
    }));
  }
  line(`[server] ${text}`, "server");
}

function enter(r) {
  room = r;
  $("room").textContent = r;
  members.clear();
  send("WHO:");
  send("ROOMS:");
}

function command(text) {
  const [cmd, ...args] = text.slice(1).split(" ");
  const arg = args.join(" ");
  switch (cmd) {
    case "join": return `JOIN:${arg}`;
    case "nick": return `JOIN:${arg}`;
    case "msg": { const [to, ...t] = args; return `MSG:${to}:${t.join(" ")}`; }
    case "who": return "WHO:";
    case "rooms": return "ROOMS:";
    case "history": return `HISTORY:${arg || 20}`;
    case "quit": return `LEAVE:${arg}`;
    default: line(`[error] unknown command /${cmd}`, "error"); return null;
  }
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws`);
  status("connecting…", false);
  socket.onopen = () => {
    retry = 500;
    status("connected", true);
    if (name) {
      send(`JOIN:${name}`);
      if (room !== "#lobby") send(`JOIN:${room}`);
    }
  };
  socket.onmessage = (e) => receive(String(e.data));
  socket.onclose = () => {
    const wait = Math.min(retry, 15000) * (0.5 + Math.random());
    status(`disconnected; retrying in ${Math.round(wait / 1000)} s`, false);
    retry *= 2;
    setTimeout(connect, wait);
  };
}

$("name-form").addEventListener("submit", (e) => {
  e.preventDefault();
  name = $("name").value.trim();
  if (!name) return;
  send(`JOIN:${name}`);
  $("name-form").hidden = true;
  $("say-form").hidden = false;
  $("line").focus();
});

$("say-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("line").value;
  if (!text.trim()) return;
  const frame = text.startsWith("/") ? command(text) : `SAY::${text}`;
  if (frame) {
    send(frame);
    if (frame.startsWith("SAY::")) line(`<${name}> ${text}`);
  }
  $("line").value = "";
});

connect();
