// Dashboard charts (Chart.js, vendored): figures from GET /api/stats, refreshed every 10 s.
(function () {
  "use strict";
  const charts = {};
  const colours = { inspected: "#1f5fbf", tunnelled: "#18794e", denied: "#b42318", other: "#98a2b3" };

  function chart(id, config) {
    if (charts[id]) {
      charts[id].data = config.data;
      charts[id].update("none");
      return;
    }
    config.options = Object.assign({ animation: false, responsive: true, maintainAspectRatio: false,
      plugins: { legend: { display: config.type !== "line" || config.data.datasets.length > 1 } } }, config.options || {});
    charts[id] = new Chart(document.getElementById(id), config);
  }

  function text(tag, value) { const el = document.createElement(tag); el.textContent = value; return el; }

  function render(s) {
    const totals = document.getElementById("totals");
    totals.replaceChildren();
    for (const [name, value] of Object.entries(s.totals)) {
      const box = document.createElement("div");
      box.append(text("b", String(value)), text("span", name));
      box.id = "total-" + name;
      totals.append(box);
    }
    chart("requests", { type: "line", data: { labels: s.minutes, datasets: [{ label: "requests", data: s.requests, borderColor: colours.inspected, tension: 0.2 }] } });
    chart("bytes", { type: "line", data: { labels: s.minutes, datasets: [{ label: "bytes", data: s.bytes, borderColor: colours.tunnelled, tension: 0.2 }] } });
    chart("decisions", { type: "bar", options: { scales: { x: { stacked: true }, y: { stacked: true } } }, data: { labels: s.minutes, datasets: [
      { label: "inspected", data: s.inspected, backgroundColor: colours.inspected },
      { label: "tunnelled", data: s.tunnelled, backgroundColor: colours.tunnelled },
      { label: "denied", data: s.denied, backgroundColor: colours.denied } ] } });
    chart("denied-rules", { type: "bar", options: { indexAxis: "y", plugins: { legend: { display: false } } }, data: {
      labels: s.top_denied_rules.map(r => r.rule), datasets: [{ label: "denied", data: s.top_denied_rules.map(r => r.count), backgroundColor: colours.denied }] } });
    chart("statuses", { type: "doughnut", data: { labels: s.top_statuses.map(r => String(r.status)), datasets: [{ data: s.top_statuses.map(r => r.count),
      backgroundColor: ["#1f5fbf", "#18794e", "#b42318", "#a15c00", "#6941c6", "#0e7090", "#c11574", "#98a2b3"] }] } });
    const body = document.querySelector("#cert-tunnels tbody");
    body.replaceChildren();
    if (!s.client_certificate_tunnels.length) {
      const row = document.createElement("tr"); const cell = text("td", "none in this period");
      cell.colSpan = 4; cell.className = "muted"; row.append(cell); body.append(row);
    }
    for (const t of s.client_certificate_tunnels) {
      const row = document.createElement("tr");
      const link = document.createElement("a"); link.href = "/log/" + encodeURIComponent(t.request_id); link.textContent = t.time.slice(0, 19).replace("T", " ");
      const first = document.createElement("td"); first.append(link);
      row.append(first, text("td", t.client_ip), text("td", t.destination), text("td", t.member));
      body.append(row);
    }
    document.body.dataset.statsLoaded = "yes";
  }

  async function refresh() {
    const response = await fetch("/api/stats?minutes=60", { credentials: "same-origin" });
    if (response.status === 401) { window.location = "/login"; return; }
    if (response.ok) render(await response.json());
  }
  refresh();
  setInterval(refresh, 10000);
})();
