// Opens tenants/summary.html in headless Chromium (Debian's chromium, driven by playwright-core) with the network
// blocked, and prints as JSON what the page shows for "All tenants" and for each tenant picked in its selector:
// the figures' cards, the rows of the tenants table left visible, page errors and every request the page made.
// Usage: node read_summary.mjs <path to summary.html> <fresh user-data-dir> <playwright-core dir>
import { openOffline } from './offline_page.mjs';

const [pagePath, userDataDir, playwrightDir] = process.argv.slice(2);
const { context, page, requests, errors, target } = await openOffline(pagePath, userDataDir, playwrightDir);

const read = () => page.evaluate(() => {
  const text = (el) => (el ? el.textContent.trim() : null);
  return {
    scope: text(document.querySelector('[data-field="scope"]')),
    error: text(document.querySelector('[data-field="error"]')),
    cards: Object.fromEntries([...document.querySelectorAll('[data-total]')]
      .map((el) => [el.dataset.total, text(el.querySelector('.v'))])),
    rows: [...document.querySelectorAll('table[data-table="tenants"] tbody tr')].filter((tr) => !tr.hidden)
      .map((tr) => Object.fromEntries([...tr.querySelectorAll('td')].map((td) => [td.dataset.field, text(td)]))),
  };
});
const options = await page.$$eval('#tenant option', (os) => os.map((o) => o.value));
const views = {};
for (const value of options) {
  await page.selectOption('#tenant', value);
  views[value] = await read();
}
await context.close();
process.stdout.write(JSON.stringify({ target, requests, errors, options, views }));
