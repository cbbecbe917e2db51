import Foundation
import IngestCoordinator
import RosterAPI
import RosterClient
import RosterMetrics

/// The coordinator's status page: one HTML file (CSS and a little JS, no
/// CDN, nothing fetched but its own `/status.json`), served at `/` on the
/// coordinator's `--metrics` address, redrawn every two seconds.
enum StatusPage {
    /// Serves `/` and `/status.json` for `coordinator` on `endpoint`.
    static func serve(on endpoint: MetricsEndpoint, coordinator: CoordinatorService) {
        endpoint.serve("/") { ("text/html; charset=utf-8", Array(html.utf8)) }
        endpoint.serve("/status.json") { ("application/json", try await json(coordinator)) }
    }

    /// The page's data: `StatusResponse` as `roster call IngestAdmin.Status`
    /// prints it, and the queue, leases and workers beside it.
    static func json(_ coordinator: CoordinatorService) async throws -> [UInt8] {
        let status = try await coordinator.currentStatus(limit: 100)
        let operations = try await coordinator.operations(limit: 50)
        let extra: [String: Any] = [
            "queue": operations.queue.map { ["version": String($0.version), "path": $0.path, "score": $0.score, "tasks": $0.tasks] },
            "leases": operations.leases.map {
                ["worker": $0.worker, "version": String($0.version), "path": $0.path, "kind": $0.kind, "seq": $0.seq, "expiresIn": $0.expiresIn]
            },
            "workers": operations.workers.map { ["id": $0.id, "lastSeenAgo": $0.lastSeenAgo, "leases": $0.leases] },
            "generatedAtMs": Int64(Date().timeIntervalSince1970 * 1000),
        ]
        let rest = try JSONSerialization.data(withJSONObject: extra, options: [.sortedKeys])
        var out = Array("{\"status\": ".utf8)
        out += Array(status.jsonText(includeDefaults: true).utf8)
        out += Array(", \"operations\": ".utf8)
        out += Array(rest)
        out += Array("}\n".utf8)
        return out
    }

    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Roster — status</title>
<style>
  :root { --ink: #1d232b; --muted: #5b6673; --line: #d9dee4; --bar: #2ca02c; --track: #e6ebf0; --bad: #d62728; --warn: #b26b00; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink); background: #fff; }
  header { padding: 14px 24px; border-bottom: 1px solid var(--line); display: flex; gap: 24px; align-items: baseline; flex-wrap: wrap; }
  header h1 { font-size: 18px; margin: 0; }
  .counts span { margin-right: 18px; color: var(--muted); }
  .counts b { color: var(--ink); }
  main { padding: 8px 24px 32px; }
  h2 { font-size: 15px; margin: 22px 0 8px; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
  th { font-weight: 600; color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .03em; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .bar { width: 180px; height: 14px; background: var(--track); border-radius: 3px; overflow: hidden; }
  .bar > div { height: 100%; background: var(--bar); }
  .problems li { color: var(--bad); }
  .state-failed, .state-rejected { color: var(--bad); font-weight: 600; }
  .state-live { color: #1a7f1a; }
  .state-held { color: var(--warn); font-weight: 600; }
  .empty { color: var(--muted); }
  #stale { color: var(--warn); }
  code { font-size: 12px; }
</style>
</head>
<body>
<header>
  <h1>Roster</h1>
  <div class="counts" id="counts">loading…</div>
  <div id="stale"></div>
</header>
<main>
  <ul class="problems" id="problems"></ul>
  <h2>Files in flight</h2>
  <div id="inflight"></div>
  <h2>Queue, by priority (what workers lease next)</h2>
  <div id="queue"></div>
  <h2>Workers and their leases</h2>
  <div id="workers"></div>
  <h2>Recent versions</h2>
  <div id="recent"></div>
  <h2 id="nodes-title" hidden>Match nodes</h2>
  <div id="nodes"></div>
</main>
<script>
"use strict";
const inFlight = ["queued", "parsing", "merging", "publishing"];
const stateName = s => String(s).replace(/^FILE_STATE_/, "").toLowerCase();
const esc = s => String(s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]);
function bytes(n) {
  n = Number(n) || 0;
  const units = ["B", "KB", "MB", "GB", "TB"];
  let u = 0;
  while (n >= 1000 && u < units.length - 1) { n /= 1000; u++; }
  return u === 0 ? n + " B" : n.toFixed(1) + " " + units[u];
}
function seconds(s) {
  s = Math.round(Number(s) || 0);
  if (s <= 0) return "";
  return s < 90 ? s + " s" : s < 5400 ? Math.round(s / 60) + " min" : (s / 3600).toFixed(1) + " h";
}
function table(head, rows, empty) {
  if (rows.length === 0) return '<p class="empty">' + empty + "</p>";
  return "<table><thead><tr>" + head.map(h => "<th>" + h + "</th>").join("") + "</tr></thead><tbody>"
    + rows.map(r => "<tr>" + r.join("") + "</tr>").join("") + "</tbody></table>";
}
const td = (v, cls) => "<td" + (cls ? ' class="' + cls + '"' : "") + ">" + v + "</td>";
function bar(fraction) {
  const pct = Math.max(0, Math.min(1, fraction)) * 100;
  return '<div class="bar" title="' + pct.toFixed(0) + '%"><div style="width:' + pct.toFixed(1) + '%"></div></div>';
}
function render(data) {
  const s = data.status, ops = data.operations;
  const files = s.files || [];
  const flying = files.filter(f => inFlight.includes(stateName(f.state)));
  const recent = files.filter(f => !inFlight.includes(stateName(f.state)));
  document.getElementById("counts").innerHTML =
    "<span><b>" + s.advertisersLive + "</b> advertisers live</span>"
    + "<span><b>" + s.filesInFlight + "</b> files in flight</span>"
    + "<span><b>" + s.tasksQueued + "</b> tasks queued</span>"
    + "<span><b>" + s.tasksLeased + "</b> leased</span>"
    + "<span><b>" + s.workersSeen + "</b> workers</span>";
  document.getElementById("problems").innerHTML = (s.problems || []).map(p => "<li>" + esc(p) + "</li>").join("");
  document.getElementById("inflight").innerHTML = table(
    ["version", "file", "state", "progress", "blocks", "bytes", "rate", "ETA", "merges"],
    flying.map(f => {
      const state = stateName(f.state);
      const merging = state === "merging" && Number(f.mergesTotal) > 0;
      const done = merging ? Number(f.mergesDone) / Number(f.mergesTotal)
        : Number(f.blocksTotal) > 0 ? Number(f.blocksDone) / Number(f.blocksTotal) : 0;
      return [td(esc(f.version), "num"), td(esc(f.path)), td(state, "state-" + state), td(bar(done)),
              td(f.blocksDone + "/" + f.blocksTotal, "num"), td(bytes(f.bytesDone) + " / " + bytes(f.size), "num"),
              td(Number(f.bytesPerSecond) > 0 ? bytes(f.bytesPerSecond) + "/s" : "", "num"), td(seconds(f.etaSeconds), "num"),
              td(Number(f.mergesTotal) > 0 ? f.mergesDone + "/" + f.mergesTotal : "", "num")];
    }), "No file is being ingested.");
  document.getElementById("queue").innerHTML = table(["version", "file", "queued tasks", "score"],
    (ops.queue || []).map(q => [td(esc(q.version), "num"), td(esc(q.path)), td(q.tasks, "num"), td(Number(q.score).toFixed(2), "num")]),
    "Nothing is waiting for a worker.");
  const leases = ops.leases || [];
  document.getElementById("workers").innerHTML = table(["worker", "seen", "leases", "holding"],
    (ops.workers || []).map(w => [td(esc(w.id)), td(seconds(w.lastSeenAgo) ? seconds(w.lastSeenAgo) + " ago" : "now"), td(w.leases, "num"),
      td(leases.filter(l => l.worker === w.id).slice(0, 4).map(l => esc(l.kind) + " " + l.seq + " of " + esc(l.path)
         + " (expires in " + (seconds(l.expiresIn) || "0 s") + ")").join("<br>"))]),
    "No worker has been seen lately.");
  document.getElementById("recent").innerHTML = table(["version", "file", "state", "keys", "invalid lines", "note"],
    recent.map(f => {
      const state = stateName(f.state);
      const kinds = Object.entries(f.invalidByKind || {}).map(([k, v]) => esc(k) + " " + v).join(", ");
      const lines = (f.invalidSamples || []).slice(0, 5).map(x => x.line).join(", ");
      const invalid = Number(f.invalidLines) > 0 ? f.invalidLines + " (" + kinds + (lines ? "; lines " + lines : "") + ")" : "0";
      return [td(esc(f.version), "num"), td(esc(f.path)), td(state, "state-" + state), td(esc(f.distinctKeys), "num"), td(invalid), td(esc(f.error || ""))];
    }), "No version has finished yet.");
  const nodes = s.nodes || [];
  document.getElementById("nodes-title").hidden = nodes.length === 0;
  document.getElementById("nodes").innerHTML = nodes.length === 0 ? "" : table(["node", "address", "weight", "health", "lists", "bytes"],
    nodes.map(n => [td(esc(n.nodeId)), td(esc(n.address)), td(n.weight, "num"), td(n.healthy ? "ok" : "DOWN", n.healthy ? "" : "state-failed"),
                    td(n.advertisers, "num"), td(bytes(n.bytesServed), "num")]));
  document.getElementById("stale").textContent = "";
  console.log("roster-status: rendered " + files.length + " files, " + flying.length + " in flight");
}
async function refresh() {
  try {
    const response = await fetch("status.json", {cache: "no-store"});
    if (!response.ok) throw new Error("status.json answered " + response.status);
    render(await response.json());
  } catch (error) {
    document.getElementById("stale").textContent = "cannot reach the coordinator: " + error.message + " (retrying)";
    console.error("roster-status error: " + error.message);
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"""#
}
