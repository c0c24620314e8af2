// Opens a report.html in headless Chromium (Debian's chromium, driven by playwright-core) with the network
// blocked, and prints what the page shows as JSON: totals, SKU table cells, findings, chart marks and their
// rendered sizes, page errors and every request the page tried to make.
// Usage: node read_report.mjs <path to report.html> <fresh user-data-dir> <playwright-core dir>
import { openOffline } from './offline_page.mjs';

const [reportPath, userDataDir, playwrightDir] = process.argv.slice(2);
const { context, page, requests, errors, target } = await openOffline(reportPath, userDataDir, playwrightDir);

const shown = await page.evaluate(() => {
  const text = (el) => (el ? el.textContent.trim() : null);
  const box = (el) => { const r = el.getBoundingClientRect(); return { width: r.width, height: r.height, y: r.y }; };
  return {
    title: document.title,
    runId: text(document.querySelector('[data-field="runId"]')),
    inactiveDays: text(document.querySelector('[data-field="inactiveDays"]')),
    totals: Object.fromEntries([...document.querySelectorAll('[data-total]')]
      .map((el) => [el.dataset.total, text(el.querySelector('.v'))])),
    changes: Object.fromEntries([...document.querySelectorAll('[data-change]')]
      .map((el) => [el.dataset.change, text(el.querySelector('.v'))])),
    skuCells: [...document.querySelectorAll('table[data-table="skus"] td[data-sku]')]
      .map((el) => ({ sku: el.dataset.sku, field: el.dataset.field, text: text(el) })),
    findings: [...document.querySelectorAll('tr[data-finding]')].map((tr) => ({
      code: tr.dataset.finding, sku: tr.dataset.sku,
      count: text(tr.querySelector('[data-field="count"]')),
      monthlySaving: text(tr.querySelector('[data-field="monthlySaving"]')),
    })),
    recommendations: [...document.querySelectorAll('table[data-table="recommendations"] tr[data-recommendation]')]
      .map((tr) => ({
        code: tr.dataset.recommendation, sku: tr.dataset.sku,
        monthlySaving: text(tr.querySelector('[data-field="monthlySaving"]')),
        yearlySaving: text(tr.querySelector('[data-field="yearlySaving"]')),
      })),
    bySku: [...document.querySelectorAll('table[data-table="recommendations-by-sku"] tr[data-recommendation]')]
      .map((tr) => ({ code: tr.dataset.recommendation, sku: tr.dataset.sku })),
    bars: [...document.querySelectorAll('svg[data-chart] rect[data-series]')].map((el) => ({
      chart: el.closest('svg').dataset.chart, sku: el.dataset.sku, series: el.dataset.series,
      value: Number(el.dataset.value), ...box(el),
    })),
    wasteLabels: [...document.querySelectorAll('svg[data-chart="waste"] tspan[data-field]')]
      .map((el) => ({ sku: el.dataset.sku, field: el.dataset.field, text: text(el) })),
    trend: [...document.querySelectorAll('svg[data-chart="trend"] circle[data-run]')].map((el) => ({
      run: el.dataset.run, series: el.dataset.series, value: Number(el.dataset.value), ...box(el),
    })),
    charts: Object.fromEntries([...document.querySelectorAll('svg[data-chart]')]
      .map((el) => [el.dataset.chart, box(el)])),
  };
});
await context.close();
process.stdout.write(JSON.stringify({ target, requests, errors, ...shown }));
