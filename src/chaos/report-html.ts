/**
 * A self-contained HTML report page (inline CSS, SVG and JavaScript, no network): a summary table, an
 * optional timeline (spans on lanes, e.g. faults and leaders, above line charts over the same time axis),
 * optional grouped bar charts (e.g. benchmark rows side by side with etcd) and tables. The data is
 * embedded as JSON and drawn by the page's script, which marks the body `data-rendered="ok"` when it is
 * done and records any script error in `data-errors`, so a headless browser can check the page.
 * Shared by the chaos harness and `npm run bench`.
 */

/** A span of time on a timeline lane (ms on the report's time axis). */
export interface TimelineSpan {
  readonly startMs: number;
  readonly endMs: number;
  readonly label: string;
  /** Spans with the same key get the same colour. */
  readonly colorKey: string;
}

/** A line chart over the timeline's time axis. */
export interface TimelineSeries {
  readonly label: string;
  readonly unit: string;
  readonly points: ReadonlyArray<readonly [number, number]>;
}

/** Lanes of spans above line charts, sharing one time axis from 0 to durationMs. */
export interface Timeline {
  readonly durationMs: number;
  readonly lanes: ReadonlyArray<{ readonly label: string; readonly spans: readonly TimelineSpan[] }>;
  /** Instants marked across all lanes (e.g. leader changes). */
  readonly markers: ReadonlyArray<{ readonly atMs: number; readonly label: string }>;
  readonly series: readonly TimelineSeries[];
}

/** A grouped bar chart: per group (e.g. a concurrency), one bar per system. */
export interface BarChart {
  readonly title: string;
  readonly unit: string;
  readonly groups: ReadonlyArray<{ readonly label: string; readonly bars: ReadonlyArray<{ readonly series: string; readonly value: number }> }>;
}

/** A table of values. */
export interface ReportTable {
  readonly title: string;
  readonly columns: readonly string[];
  readonly rows: ReadonlyArray<ReadonlyArray<string | number>>;
}

/** Everything one page shows. */
export interface ReportPage {
  readonly title: string;
  readonly subtitle: string;
  /** "ok" pages get a green banner, "fail" pages a red one. */
  readonly status: "ok" | "fail" | "info";
  readonly summary: ReadonlyArray<readonly [string, string]>;
  readonly timeline?: Timeline;
  readonly bars: readonly BarChart[];
  readonly tables: readonly ReportTable[];
  /** Free text blocks (e.g. violations as JSON), shown in <pre>. */
  readonly details: ReadonlyArray<{ readonly title: string; readonly text: string }>;
}

const style = `
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}.sub{color:#666;margin-bottom:12px}
.banner{padding:8px 12px;border-radius:4px;margin:12px 0;font-weight:600}.ok{background:#e3f6e5;color:#1b5e20}
.fail{background:#fde4e4;color:#b71c1c}.info{background:#e8eef8;color:#1a3a6b}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}pre{background:#f7f7f7;padding:8px;overflow:auto;max-height:400px}
svg text{font:11px system-ui,sans-serif;fill:#333}.legend span{display:inline-block;margin-right:12px}
.swatch{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}`;

/** The page's renderer (plain JavaScript, runs in the browser). */
const script = `
(function(){
var NS="http://www.w3.org/2000/svg";
var palette=["#1f77b4","#d62728","#2ca02c","#ff7f0e","#9467bd","#8c564b","#e377c2","#17becf","#bcbd22","#7f7f7f"];
var colors={};function color(k){if(!(k in colors))colors[k]=palette[Object.keys(colors).length%palette.length];return colors[k];}
function el(name,attrs,parent,text){var e=document.createElementNS(NS,name);for(var a in attrs)e.setAttribute(a,attrs[a]);if(text!==undefined)e.textContent=text;if(parent)parent.appendChild(e);return e;}
function html(name,parent,text){var e=document.createElement(name);if(text!==undefined)e.textContent=text;parent.appendChild(e);return e;}
function fmt(v){return Math.abs(v)>=100?String(Math.round(v)):String(Math.round(v*10)/10);}
function drawTimeline(t,root){
  var W=1100,left=130,right=20,laneH=22,chartH=110,w=W-left-right;
  var lanesH=t.lanes.length*laneH,H=lanesH+t.series.length*(chartH+24)+40;
  var svg=el("svg",{id:"timeline",width:W,height:H,viewBox:"0 0 "+W+" "+H},root);
  var x=function(ms){return left+w*Math.max(0,Math.min(1,ms/Math.max(1,t.durationMs)));};
  t.lanes.forEach(function(lane,i){
    var y=i*laneH;el("text",{x:4,y:y+15},svg,lane.label);
    el("rect",{x:left,y:y+2,width:w,height:laneH-4,fill:"#f6f6f6"},svg);
    lane.spans.forEach(function(s){var r=el("rect",{"class":"span",x:x(s.startMs),y:y+3,width:Math.max(2,x(s.endMs)-x(s.startMs)),height:laneH-6,fill:color(s.colorKey)},svg);el("title",{},r,s.label);});
  });
  t.markers.forEach(function(m){var l=el("line",{"class":"marker",x1:x(m.atMs),x2:x(m.atMs),y1:0,y2:lanesH,stroke:"#000","stroke-dasharray":"2,2"},svg);el("title",{},l,m.label);});
  t.series.forEach(function(s,i){
    var top=lanesH+12+i*(chartH+24);var max=0;s.points.forEach(function(p){if(p[1]>max)max=p[1];});max=max||1;
    el("text",{x:4,y:top+12},svg,s.label);el("text",{x:4,y:top+26},svg,"max "+fmt(max)+" "+s.unit);
    el("rect",{x:left,y:top,width:w,height:chartH,fill:"none",stroke:"#ccc"},svg);
    var pts=s.points.map(function(p){return x(p[0]).toFixed(1)+","+(top+chartH-chartH*p[1]/max).toFixed(1);}).join(" ");
    el("polyline",{"class":"series",points:pts,fill:"none",stroke:color("series:"+s.label),"stroke-width":1.5},svg);
  });
  var axisY=H-14;for(var k=0;k<=10;k++){var ms=t.durationMs*k/10;el("text",{x:x(ms)-10,y:axisY},svg,fmt(ms/1000)+" s");}
  var legend=html("div",root);legend.className="legend";
  Object.keys(colors).filter(function(k){return k.indexOf("series:")!==0;}).forEach(function(k){var s=html("span",legend);var sw=html("span",s);sw.className="swatch";sw.style.background=colors[k];s.appendChild(document.createTextNode(k));});
}
function drawBars(chart,root){
  html("h2",root,chart.title);
  var series=[];chart.groups.forEach(function(g){g.bars.forEach(function(b){if(series.indexOf(b.series)<0)series.push(b.series);});});
  var max=0;chart.groups.forEach(function(g){g.bars.forEach(function(b){if(b.value>max)max=b.value;});});max=max||1;
  var barW=22,gap=26,H=220,left=60,W=left+chart.groups.length*(series.length*barW+gap)+20;
  var svg=el("svg",{"class":"bars",width:W,height:H+40},root);
  el("text",{x:4,y:12},svg,fmt(max)+" "+chart.unit);
  chart.groups.forEach(function(g,i){
    var gx=left+i*(series.length*barW+gap);
    g.bars.forEach(function(b){var j=series.indexOf(b.series);var h=H*b.value/max;var r=el("rect",{x:gx+j*barW,y:20+H-h,width:barW-2,height:h,fill:color(b.series)},svg);el("title",{},r,b.series+": "+fmt(b.value)+" "+chart.unit);});
    el("text",{x:gx,y:H+34},svg,g.label);
  });
  var legend=html("div",root);legend.className="legend";
  series.forEach(function(k){var s=html("span",legend);var sw=html("span",s);sw.className="swatch";sw.style.background=color(k);s.appendChild(document.createTextNode(k));});
}
function drawTable(t,root){
  html("h2",root,t.title);var table=html("table",root);var tr=html("tr",table);
  t.columns.forEach(function(c){html("th",tr,c);});
  t.rows.forEach(function(r){var tr2=html("tr",table);r.forEach(function(v){html("td",tr2,typeof v==="number"?fmt(v):String(v));});});
}
var page=JSON.parse(document.getElementById("report-data").textContent);
var root=document.getElementById("report");
html("h1",root,page.title);var sub=html("div",root,page.subtitle);sub.className="sub";
if(page.status!=="info"){var banner=html("div",root,page.status==="ok"?"OK":"FAILED");banner.className="banner "+page.status;}
var summary=html("table",root);page.summary.forEach(function(kv){var tr=html("tr",summary);html("th",tr,kv[0]);html("td",tr,kv[1]);});
if(page.timeline){html("h2",root,"Timeline");drawTimeline(page.timeline,root);}
page.bars.forEach(function(b){drawBars(b,root);});
page.tables.forEach(function(t){drawTable(t,root);});
page.details.forEach(function(d){html("h2",root,d.title);html("pre",root,d.text);});
document.body.setAttribute("data-rendered","ok");
})();`;

function escapeHtml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** Renders `page` as one self-contained HTML document. */
export function renderReportHtml(page: ReportPage): string {
  // "<" escaped so that no "</script>" inside the data can end the data block.
  const data = JSON.stringify(page).replace(/</g, "\\u003c");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(page.title)}</title><style>${style}</style></head>
<body>
<script>window.addEventListener("error",function(e){document.body.setAttribute("data-errors",(document.body.getAttribute("data-errors")||"")+String(e.message)+";");});</script>
<div id="report"></div>
<script type="application/json" id="report-data">${data}</script>
<script>${script}</script>
</body></html>
`;
}
