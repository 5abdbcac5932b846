// The review console's only script: the queue refreshes itself, filters apply on change, and the
// confirm form shows its rate fields only when "limit" is chosen. Every page works without it.
(function () {
  'use strict';
  const live = document.getElementById('queue-live');
  if (live) {
    const every = parseInt(live.dataset.refresh || '15000', 10);
    const updated = document.getElementById('updated');
    const refresh = async function () {
      if (document.hidden) return;
      try {
        const r = await fetch('/queue/rows' + location.search, { credentials: 'same-origin', redirect: 'manual' });
        if (r.type === 'opaqueredirect' || r.status === 401) { location.href = '/login?returnUrl=' + encodeURIComponent(location.pathname + location.search); return; }
        if (!r.ok) return;
        live.innerHTML = await r.text();
        if (updated) updated.textContent = 'updated ' + new Date().toISOString().substring(11, 19) + 'Z';
      } catch (e) { /* offline for a moment: try again next time */ }
    };
    setInterval(refresh, every);
    document.addEventListener('visibilitychange', function () { if (!document.hidden) refresh(); });
    live.addEventListener('click', function (e) {
      const li = e.target.closest('.counts li');
      if (!li) return;
      const form = document.getElementById('filters');
      form.elements['class'].value = li.dataset.class || '';
      form.submit();
    });
  }
  const filters = document.getElementById('filters');
  if (filters) {
    filters.addEventListener('change', function (e) {
      if (e.target.name === 'from' || e.target.name === 'to') { filters.elements['range'].value = 'custom'; return; }
      filters.submit();
    });
  }
  const confirm = document.getElementById('confirm-form');
  if (confirm) {
    const mode = confirm.querySelector('select.mode');
    const rates = confirm.querySelector('.rates');
    const sync = function () { rates.classList.toggle('hidden', mode.value !== 'limit'); };
    mode.addEventListener('change', sync);
    sync();
  }
})();
