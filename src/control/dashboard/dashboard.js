// The live operator dashboard of a lightpath control replica (served at /dashboard; see
// src/control/dashboard/mod.rs). It draws the world map once from /dashboard/world.json (TopoJSON), then
// redraws the mesh from every `mesh` event of /api/events: the control plane's picture of regions, nodes
// (with their state), the measured graph, routes and streams. The page decides nothing about health: a
// node's `state` and a link's `state` are the control plane's, shown as they come.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 1000;
// Latitudes shown: the inhabited world, 84 N to 60 S (equirectangular, 1000 units for 360 degrees).
const NORTH = 84;
const SOUTH = -60;

const project = (lat, lon) => [((lon + 180) / 360) * WIDTH, ((NORTH - lat) / 360) * WIDTH];

const el = (name, attrs = {}, parent = null) => {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
};

const html = (name, text, attrs = {}) => {
  const node = document.createElement(name);
  if (text !== undefined) node.textContent = text;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
};

// ---- The map: TopoJSON arcs to SVG paths ----

// The arcs of a TopoJSON topology as absolute [lon, lat] points (arcs are delta-encoded and quantized).
function decodeArcs(topology) {
  const [sx, sy] = topology.transform.scale;
  const [tx, ty] = topology.transform.translate;
  return topology.arcs.map((arc) => {
    let x = 0;
    let y = 0;
    return arc.map(([dx, dy]) => {
      x += dx;
      y += dy;
      return [x * sx + tx, y * sy + ty];
    });
  });
}

// One ring (a list of arc indices; ~i is arc i reversed) as SVG subpaths. A ring that crosses the
// antimeridian (Chukotka, Fiji) is unwrapped into one continuous outline past the map's edge and drawn a
// second time a world's width over, so each half shows at its side instead of a line across the map.
function ringPath(ring, arcs) {
  const points = [];
  for (const index of ring) {
    const arc = index >= 0 ? arcs[index] : arcs[~index].slice().reverse();
    // Consecutive arcs share their joining point.
    points.push(...(points.length ? arc.slice(1) : arc));
  }
  const unwrapped = [];
  let shift = 0;
  for (const [lon, lat] of points) {
    const previous = unwrapped.length ? unwrapped[unwrapped.length - 1][0] : lon;
    if (lon + shift - previous > 180) shift -= 360;
    if (lon + shift - previous < -180) shift += 360;
    unwrapped.push([lon + shift, lat]);
  }
  const path = (offset) =>
    'M' + unwrapped.map(([lon, lat]) => project(lat, lon + offset).map((v) => v.toFixed(1)).join(' ')).join('L') + 'Z';
  const lons = unwrapped.map(([lon]) => lon);
  if (Math.min(...lons) < -180) return path(0) + path(360);
  if (Math.max(...lons) > 180) return path(0) + path(-360);
  return path(0);
}

async function drawWorld() {
  const topology = await (await fetch('/dashboard/world.json')).json();
  const arcs = decodeArcs(topology);
  const layer = document.getElementById('countries');
  for (const geometry of topology.objects.countries.geometries) {
    const polygons = geometry.type === 'Polygon' ? [geometry.arcs] : geometry.type === 'MultiPolygon' ? geometry.arcs : [];
    const d = polygons.flatMap((rings) => rings.map((ring) => ringPath(ring, arcs))).join('');
    if (d) el('path', { d, class: 'country', 'data-name': geometry.properties?.name ?? '' }, layer);
  }
  document.body.dataset.world = 'drawn';
}

// ---- The mesh ----

// Where each node is drawn: its region's point, several nodes of one region on a small circle around it.
function placeNodes(picture) {
  const regions = new Map(picture.regions.map((r) => [r.name, r]));
  const byRegion = new Map();
  for (const node of picture.nodes) {
    if (!byRegion.has(node.region)) byRegion.set(node.region, []);
    byRegion.get(node.region).push(node);
  }
  const at = new Map();
  for (const [name, nodes] of byRegion) {
    const region = regions.get(name);
    if (!region) continue;
    const [x, y] = project(region.lat, region.lon);
    nodes.forEach((node, i) => {
      if (nodes.length === 1) return at.set(node.id, [x, y]);
      const angle = (2 * Math.PI * i) / nodes.length - Math.PI / 2;
      const r = 10 + 3 * nodes.length;
      at.set(node.id, [x + r * Math.cos(angle), y + r * Math.sin(angle)]);
    });
  }
  return at;
}

// A link's colour from its measured round trip; loss shows as a dashed stroke (see the legend).
function rttColour(rtt) {
  if (rtt === null || rtt === undefined) return '#556';
  if (rtt < 40) return '#38b000';
  if (rtt < 120) return '#f9c74f';
  if (rtt < 250) return '#f8961e';
  return '#f3722c';
}

// A slightly bent path from a to b, so that a tree edge and its link stay apart from crossing lines.
function arcPath([x1, y1], [x2, y2], bend = 0.12) {
  const [mx, my] = [(x1 + x2) / 2, (y1 + y2) / 2];
  const [nx, ny] = [-(y2 - y1) * bend, (x2 - x1) * bend];
  return `M${x1.toFixed(1)} ${y1.toFixed(1)}Q${(mx + nx).toFixed(1)} ${(my + ny).toFixed(1)} ${x2.toFixed(1)} ${y2.toFixed(1)}`;
}

const mainRole = (roles) => ['origin', 'edge', 'relay'].find((r) => roles.includes(r)) ?? 'relay';

// When each node was first drawn failed (ms since the epoch), kept across redraws: tests and operators read
// it from the node's data-failed-at.
const failedAt = new Map();
let selected = null;

function drawLinks(picture, at) {
  const layer = document.getElementById('links');
  layer.replaceChildren();
  for (const link of picture.graph) {
    const [a, b] = [at.get(link.a), at.get(link.b)];
    if (!a || !b) continue;
    const path = el('path', {
      d: arcPath(a, b),
      class: 'link' + (link.loss !== null && link.loss >= 0.01 ? ' lossy' : ''),
      'data-a': link.a,
      'data-b': link.b,
      'data-state': link.state,
    }, layer);
    if (link.state === 'up') path.setAttribute('stroke', rttColour(link.rtt_ms));
    const rtt = link.rtt_ms === null ? 'not measured' : `${link.rtt_ms.toFixed(1)} ms RTT`;
    const loss = link.loss === null ? '' : `, ${(link.loss * 100).toFixed(2)} % loss`;
    el('title', {}, path).textContent = `${link.a} – ${link.b}: ${link.state}, ${rtt}${loss}`;
  }
}

// The hops of a stream's tree that can carry it: a failed node's last report may still list its hop for a
// moment (until the replica forgets it), but nothing flows to or through a failed node.
function liveHops(picture, stream) {
  const failed = new Set(picture.nodes.filter((n) => n.failed).map((n) => n.id));
  return stream.tree.filter((hop) => hop.upstream && !failed.has(hop.node) && !failed.has(hop.upstream));
}

function drawTree(picture, stream, at) {
  const layer = document.getElementById('tree');
  layer.replaceChildren();
  if (!stream) return;
  for (const hop of liveHops(picture, stream)) {
    const [from, to] = [at.get(hop.upstream), at.get(hop.node)];
    if (!from || !to) continue;
    el('path', { d: arcPath(from, to, 0.2), class: 'tree-edge', 'data-from': hop.upstream, 'data-to': hop.node }, layer);
  }
}

function drawRegions(picture, stream) {
  const layer = document.getElementById('regions');
  layer.replaceChildren();
  const viewers = viewersByRegion(picture, stream);
  for (const region of picture.regions) {
    const [x, y] = project(region.lat, region.lon);
    const g = el('g', { class: 'region', 'data-region': region.name }, layer);
    el('circle', { cx: x, cy: y, r: 28 }, g);
    el('text', { x: x - 26, y: y + 42 }, g).textContent = region.name;
    const count = viewers.get(region.name) ?? 0;
    if (count > 0) {
      el('text', { x: x - 26, y: y + 55, class: 'viewers', 'data-viewers': count }, g).textContent =
        `${count} viewer${count === 1 ? '' : 's'}`;
    }
  }
}

function drawNodes(picture, at) {
  const layer = document.getElementById('nodes');
  layer.replaceChildren();
  for (const node of picture.nodes) {
    const p = at.get(node.id);
    if (!p) continue;
    if (node.failed && !failedAt.has(node.id)) failedAt.set(node.id, Date.now());
    if (!node.failed) failedAt.delete(node.id);
    const g = el('g', {
      class: 'node',
      transform: `translate(${p[0].toFixed(1)} ${p[1].toFixed(1)})`,
      'data-node': node.id,
      'data-role': mainRole(node.roles),
      'data-state': node.state,
      'data-failed': String(node.failed),
      'data-draining': String(Boolean(node.draining)),
    }, layer);
    if (failedAt.has(node.id)) g.setAttribute('data-failed-at', String(failedAt.get(node.id)));
    el('circle', { class: 'halo', r: 9 }, g);
    el('circle', { class: 'core', r: 7 }, g);
    el('path', { class: 'cross', d: 'M-4 -4L4 4M4 -4L-4 4' }, g);
    el('text', { x: 10, y: 4 }, g).textContent = node.failed
      ? `${node.id} (${node.state})`
      : node.draining ? `${node.id} (draining)` : node.id;
    el('title', {}, g).textContent = `${node.id}: ${node.roles.join(', ')}, ${node.state}`;
  }
}

// Viewers per region: of one stream, or of every stream when none is chosen.
function viewersByRegion(picture, stream) {
  const totals = new Map();
  for (const s of stream ? [stream] : picture.streams) {
    for (const [region, n] of Object.entries(s.viewers_by_region ?? {})) totals.set(region, (totals.get(region) ?? 0) + n);
  }
  return totals;
}

function row(cells, attrs = {}) {
  const tr = html('tr', undefined, attrs);
  for (const [text, cls] of cells) tr.appendChild(html('td', text, cls ? { class: cls } : {}));
  return tr;
}

function drawSide(picture, stream) {
  const select = document.getElementById('stream');
  const names = picture.streams.map((s) => s.stream);
  if (select.options.length !== names.length || names.some((n, i) => select.options[i].value !== n)) {
    select.replaceChildren(...names.map((n) => html('option', n, { value: n })));
  }
  if (stream) select.value = stream.stream;

  const info = document.getElementById('stream-info');
  info.replaceChildren();
  if (stream) {
    info.appendChild(row([['state'], [stream.state, stream.state === 'live' ? '' : 'failed']]));
    info.appendChild(row([['origin'], [stream.origin ?? '–']]));
    info.appendChild(row([['tree'], [liveHops(picture, stream).map((h) => `${h.upstream}→${h.node}`).join(', ') || '–']]));
    info.appendChild(row([['viewers'], [String(stream.viewers), 'num']]));
  } else {
    info.appendChild(row([['no stream is live'], ['']]));
  }

  const viewers = document.getElementById('viewers');
  viewers.replaceChildren();
  for (const [region, n] of viewersByRegion(picture, stream)) {
    viewers.appendChild(row([[region], [String(n), 'num']], { 'data-region': region }));
  }

  const nodes = document.getElementById('node-list');
  nodes.replaceChildren(html('tr'));
  nodes.firstChild.append(html('th', 'node'), html('th', 'region'), html('th', 'state'));
  for (const node of picture.nodes) {
    const state = !node.failed && node.draining ? 'draining' : node.state;
    nodes.appendChild(row([[node.id], [node.region], [state, node.failed ? 'failed' : '']]));
  }

  const links = document.getElementById('link-list');
  links.replaceChildren(html('tr'));
  links.firstChild.append(html('th', 'link'), html('th', 'RTT ms'), html('th', 'loss'));
  for (const link of picture.graph) {
    const down = link.state === 'down';
    links.appendChild(row([
      [`${link.a}–${link.b}`, down ? 'failed' : ''],
      [down ? 'down' : link.rtt_ms === null ? '–' : link.rtt_ms.toFixed(1), 'num'],
      [down || link.loss === null ? '–' : `${(link.loss * 100).toFixed(1)} %`, 'num'],
    ]));
  }
}

let latest = null;

function draw() {
  if (!latest) return;
  const picture = latest;
  const at = placeNodes(picture);
  const stream = picture.streams.find((s) => s.stream === selected) ?? picture.streams.find((s) => s.state === 'live') ?? picture.streams[0];
  selected = stream ? stream.stream : null;
  drawLinks(picture, at);
  drawTree(picture, stream, at);
  drawRegions(picture, stream);
  drawNodes(picture, at);
  drawSide(picture, stream);
  document.getElementById('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
  document.body.dataset.events = String(Number(document.body.dataset.events ?? 0) + 1);
}

function follow() {
  const status = document.getElementById('status');
  const events = new EventSource('/api/events');
  events.addEventListener('open', () => {
    status.textContent = 'live';
    status.dataset.live = 'true';
  });
  events.addEventListener('error', () => {
    status.textContent = 'reconnecting…';
    status.dataset.live = 'false';
  });
  events.addEventListener('mesh', (event) => {
    latest = JSON.parse(event.data);
    draw();
  });
}

document.getElementById('stream').addEventListener('change', (event) => {
  selected = event.target.value;
  draw();
});
document.getElementById('replica').textContent = location.host;
drawWorld().catch((e) => { document.body.dataset.world = `failed: ${e}`; });
follow();
