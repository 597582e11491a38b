-- cache_resource.server_assets: the styles and scripts of the pages
-- cache_resource.server sends. Internal to the server.
local M = {}

-- The page's styles: a look close to Streamlit's.
M.css = [[
:root { --cr-primary: #ff4b4b; --cr-text: #31333f; --cr-muted: rgba(49, 51, 63, .6); --cr-line: rgba(49, 51, 63, .2);
  --cr-soft: #f0f2f6;
  --cr-track: #d5dae5;
  /* Streamlit's Source Sans when installed; else each system's own UI sans (macOS, Windows,
     Android) or a Helvetica or Arial (Linux fontconfig maps them to Liberation Sans): system-ui
     is left out, as on Linux it is often a much heavier face. */
  font-family: "Source Sans Pro", "Source Sans 3", -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto,
    "Helvetica Neue", Helvetica, Arial, sans-serif; font-weight: 400; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--cr-text); background: #fff; font-size: 16px; line-height: 1.6; }
.cr-bar { position: fixed; top: 0; left: 0; right: 0; height: 3rem; z-index: 10; display: flex; align-items: center;
  justify-content: space-between; padding: 0 1rem; background: rgba(255, 255, 255, .92);
  border-bottom: 1px solid #eee; }
.cr-bar::before { content: ""; position: absolute; top: 0; left: 0; right: 0; height: 3px;
  background: linear-gradient(90deg, #ff4b4b, #ffbd45); }
.cr-brand { font-weight: 600; font-size: .95rem; }
.cr-status { display: flex; align-items: center; gap: .5rem; font-size: .85rem; color: var(--cr-muted); }
.cr-status .cr-spin { width: 1rem; height: 1rem; }
.cr-apply { font: inherit; font-size: .85rem; padding: .2rem .8rem; border-radius: .5rem;
  border: 1px solid var(--cr-primary);
  background: var(--cr-primary); color: #fff; cursor: pointer; margin-left: 1rem; }
.cr-notice { position: relative; z-index: 5; margin: 3.5rem auto 0; max-width: 46rem; padding: .75rem 1rem;
  border-radius: .5rem;
  background: rgba(255, 227, 18, .15); color: #926c05; }
.cr-notice + .cr-stage .cr-main, .cr-notice + .cr-notice { padding-top: 1.5rem; }
.cr-page { display: flex; min-height: 100vh; align-items: stretch; }
.cr-sidebar { flex: 0 0 21rem; width: 21rem; background: var(--cr-soft); padding: 5rem 1.5rem 2rem; }
.cr-main { flex: 1 1 auto; min-width: 0; max-width: 48rem; margin: 0 auto; padding: 5rem 1rem 6rem; }
body.cr-rerunning .cr-final { opacity: .45; transition: opacity .3s .3s; }
.cr-stage:not(:has(+ .cr-done)), .cr-stage:has(~ .cr-stage + .cr-done), .cr-done { display: none; }
h1.cr-title { font-size: 2.75rem; font-weight: 700; line-height: 1.2; margin: 1rem 0 1rem; }
h2.cr-header { font-size: 2rem; font-weight: 600; line-height: 1.2; margin: 1.5rem 0 .75rem; }
h3.cr-subheader { font-size: 1.5rem; font-weight: 600; line-height: 1.2; margin: 1.25rem 0 .5rem; }
.cr-sidebar h1.cr-title { font-size: 2rem; } .cr-sidebar h2.cr-header { font-size: 1.5rem; margin-top: 0; }
.cr-sidebar h3.cr-subheader { font-size: 1.25rem; }
p.cr-write, .cr-markdown p { margin: 0 0 1rem; }
p.cr-caption { font-size: .875rem; color: var(--cr-muted); margin: 0 0 1rem; }
pre, code { font-family: "Source Code Pro", ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono",
  monospace; }
pre { font-size: .875rem; }
pre.cr-text { white-space: pre-wrap; margin: 0 0 1rem; font-size: .9rem; }
pre.cr-code, pre.cr-json { background: var(--cr-soft); border-radius: .5rem; padding: 1rem; margin: 0 0 1rem;
  white-space: pre-wrap; word-break: break-word; }
code { background: var(--cr-soft); border-radius: .25rem; padding: .1rem .25rem; font-size: .875em; }
pre code { background: none; border-radius: 0; padding: 0; font-size: inherit; } /* inline code's padding
  would push a block's first line right */
hr.cr-divider { border: 0; border-bottom: 1px solid var(--cr-line); margin: 2rem 0; }
.cr-alert { display: flex; gap: .75rem; padding: 1rem; border-radius: .5rem; margin: 0 0 1rem; }
.cr-alert-body { white-space: pre-wrap; word-break: break-word; min-width: 0; }
.cr-success { background: rgba(33, 195, 84, .1); color: #177233; }
.cr-info { background: rgba(28, 131, 225, .1); color: #004280; }
.cr-warning { background: rgba(255, 227, 18, .1); color: #926c05; }
.cr-error, .cr-exception { background: rgba(255, 43, 43, .09); color: #7d353b; }
.cr-trace summary { cursor: pointer; margin-top: .5rem; } .cr-trace pre { margin: .25rem 0 0; color: var(--cr-text); }
.cr-container.cr-border { border: 1px solid var(--cr-line); border-radius: .5rem; padding: 1rem; margin: 0 0 1rem; }
.cr-columns { display: flex; align-items: flex-start; gap: 1rem; margin: 0 0 .5rem; }
.cr-columns.cr-gap-medium { gap: 2rem; } .cr-columns.cr-gap-large { gap: 4rem; }
.cr-column { min-width: 0; }
.cr-expander { border: 1px solid var(--cr-line); border-radius: .5rem; margin: 0 0 1rem; }
.cr-expander > summary { cursor: pointer; padding: .6rem 1rem; font-size: .95rem; }
.cr-expander > summary:hover { color: var(--cr-primary); }
.cr-expander-body { padding: .25rem 1rem .5rem; }
.cr-widget { margin: 0 0 1rem; }
.cr-label { display: block; font-size: .875rem; margin-bottom: .25rem; }
.cr-label-hidden { visibility: hidden; } .cr-label-collapsed { display: none; }
.cr-help { display: inline-block; width: 1rem; height: 1rem; line-height: 1rem; text-align: center; border-radius: 50%;
  border: 1px solid var(--cr-muted); color: var(--cr-muted); font-size: .7rem; margin-left: .35rem; cursor: help; }
.cr-widget input[type=text], .cr-widget input[type=password], .cr-widget input[type=number], .cr-widget select {
  width: 100%; font: inherit; font-size: .95rem; color: inherit; background: var(--cr-soft);
  border: 1px solid transparent;
  border-radius: .5rem; padding: .45rem .75rem; outline: none; }
.cr-widget input:focus, .cr-widget select:focus { border-color: var(--cr-primary); }
.cr-sidebar .cr-widget input[type=text], .cr-sidebar .cr-widget input[type=number],
  .cr-sidebar .cr-widget select { background: #fff; }
.cr-slider-head { display: flex; justify-content: space-between; align-items: baseline; }
.cr-slider output { color: var(--cr-primary); font-size: .875rem; font-weight: 600; }
/* The track is the input itself: filled up to --cr-fill (set on the input, and kept by the page's
   script while the thumb moves), light grey after it, as Streamlit draws it. */
.cr-slider input[type=range] { -webkit-appearance: none; appearance: none; display: block; width: 100%; height: 4px;
  margin: .9rem 0 .6rem; border-radius: 2px; cursor: pointer; outline: none;
  background: linear-gradient(to right, var(--cr-primary) var(--cr-fill, 0%), var(--cr-track) var(--cr-fill, 0%)); }
.cr-slider input[type=range]::-webkit-slider-thumb { -webkit-appearance: none; appearance: none; width: .85rem;
  height: .85rem; border: 0; border-radius: 50%; background: var(--cr-primary); }
.cr-slider input[type=range]::-moz-range-thumb { width: .85rem; height: .85rem; border: 0; border-radius: 50%;
  background: var(--cr-primary); }
.cr-slider input[type=range]:focus-visible::-webkit-slider-thumb { box-shadow: 0 0 0 .2rem rgba(255, 75, 75, .5); }
.cr-slider input[type=range]:focus-visible::-moz-range-thumb { box-shadow: 0 0 0 .2rem rgba(255, 75, 75, .5); }
.cr-slider input[type=range]:disabled { opacity: .5; cursor: not-allowed; }
.cr-slider-ends { display: flex; justify-content: space-between; font-size: .75rem; color: var(--cr-muted); }
.cr-check { display: flex; align-items: center; gap: .5rem; cursor: pointer; font-size: .95rem; }
.cr-check input { width: 1rem; height: 1rem; accent-color: var(--cr-primary); margin: 0; }
.cr-toggle .cr-check input { position: absolute; opacity: 0; width: 1px; height: 1px; }
.cr-switch { position: relative; width: 2rem; height: 1.1rem; border-radius: 1rem; background: #d6d6d9;
  transition: background .15s; flex: none; }
.cr-switch::after { content: ""; position: absolute; top: .15rem; left: .15rem; width: .8rem; height: .8rem;
  border-radius: 50%;
  background: #fff; transition: left .15s; }
.cr-toggle input:checked + .cr-switch { background: var(--cr-primary); }
.cr-toggle input:checked + .cr-switch::after { left: 1.05rem; }
fieldset.cr-radio { border: 0; padding: 0; margin: 0 0 1rem; }
fieldset.cr-radio legend { padding: 0; }
.cr-choices { display: flex; flex-direction: column; gap: .15rem; }
.cr-horizontal .cr-choices { flex-direction: row; gap: 1rem; }
.cr-choice { display: flex; align-items: center; gap: .5rem; cursor: pointer; }
.cr-choice input { accent-color: var(--cr-primary); margin: 0; }
/* button.: the widget's wrapper has the class cr-button too (cr-KIND) */
button.cr-button { font: inherit; font-size: .95rem; padding: .35rem .85rem; border-radius: .5rem; cursor: pointer;
  border: 1px solid var(--cr-line); background: #fff; color: inherit; }
button.cr-button:hover { border-color: var(--cr-primary); color: var(--cr-primary); }
button.cr-button-primary { background: var(--cr-primary); border-color: var(--cr-primary); color: #fff; }
button.cr-button-primary:hover { color: #fff; filter: brightness(.95); }
button.cr-button-tertiary { border-color: transparent; background: none; } button.cr-wide { width: 100%; }
.cr-dropzone { display: flex; flex-direction: column; gap: .25rem; padding: 1rem; border-radius: .5rem;
  background: var(--cr-soft); }
.cr-dropzone small { color: var(--cr-muted); }
.cr-spinner { display: flex; align-items: center; gap: .6rem; margin: 0 0 1rem; font-size: .95rem; }
.cr-elapsed { color: var(--cr-muted); font-variant-numeric: tabular-nums; }
.cr-spin { display: inline-block; width: 1.25rem; height: 1.25rem; border-radius: 50%;
  border: 3px solid rgba(255, 75, 75, .2);
  border-top-color: var(--cr-primary); animation: cr-turn 1s linear infinite; flex: none; }
@keyframes cr-turn { to { transform: rotate(360deg); } }
.cr-toast { position: fixed; right: 1rem; bottom: 1rem; max-width: 30rem; z-index: 20; }
@media (max-width: 800px) { .cr-page { flex-direction: column; }
  .cr-sidebar { width: auto; flex: none; padding-top: 4rem; }
  .cr-columns { flex-direction: column; } .cr-column { width: 100%; } }
]]

-- In the head: what the streamed parts need while the script still runs.
M.head_js = [[
window.cr = { drop: function () { // removes the parts before the latest whole one
  var parts = document.querySelectorAll('.cr-stage');
  for (var i = 0; i < parts.length - 1; i++) {
    var done = parts[i].nextElementSibling;
    if (done && done.classList.contains('cr-done')) done.remove();
    parts[i].remove();
  }
} };
setInterval(function () {
  document.querySelectorAll('.cr-spinner[data-show-time]').forEach(function (el) {
    if (!el.dataset.t0) el.dataset.t0 = String(Date.now());
    var t = el.querySelector('.cr-elapsed');
    if (t) t.textContent = '(' + ((Date.now() - Number(el.dataset.t0)) / 1000).toFixed(1) + ' s)';
  });
}, 100);
]]

-- After the final page: widgets post their new value, then the page re-runs.
M.page_js = [[
(function () {
  var form = document.getElementById('cr-form');
  if (!form) return;
  function toast(text) {
    var box = document.createElement('div');
    box.className = 'cr-alert cr-error cr-toast';
    box.setAttribute('role', 'alert');
    box.textContent = text;
    document.body.appendChild(box);
    setTimeout(function () { box.remove(); }, 6000);
  }
  function post(id, value) {
    document.body.classList.add('cr-rerunning');
    fetch('/set', { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ id: id, value: value }) }).then(function (r) {
      if (r.status === 204 || r.status === 410) { location.reload(); return; }
      return r.text().then(function (t) { document.body.classList.remove('cr-rerunning'); toast(t); });
    }, function () { location.reload(); });
  }
  form.addEventListener('submit', function (e) { e.preventDefault(); });
  form.querySelectorAll('[data-widget]').forEach(function (el) {
    var kind = el.dataset.widget;
    if (kind === 'button') {
      el.addEventListener('click', function (e) { e.preventDefault(); post(el.name, 'true'); });
    } else if (kind === 'checkbox' || kind === 'toggle') {
      el.addEventListener('change', function () { post(el.name, String(el.checked)); });
    } else {
      if (kind === 'slider') el.addEventListener('input', function () {
        var out = el.parentNode.querySelector('output');
        if (out) out.textContent = el.value;
        var span = Number(el.max) - Number(el.min);
        el.style.setProperty('--cr-fill', (span > 0 ? (Number(el.value) - Number(el.min)) / span * 100 : 0) + '%');
      });
      el.addEventListener('change', function () { post(el.name, el.value); });
    }
  });
  form.querySelectorAll('details.cr-expander').forEach(function (d, i) {
    var key = 'cr-expander:' + i + ':' + d.querySelector('summary').textContent;
    var saved = sessionStorage.getItem(key);
    if (saved !== null) d.open = saved === '1';
    d.addEventListener('toggle', function () { sessionStorage.setItem(key, d.open ? '1' : '0'); });
  });
})();
]]

return M
