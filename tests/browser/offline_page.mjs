// Opens a local HTML file in headless Chromium (Debian's chromium, driven by playwright-core) with the network
// blocked: a self-contained page must need nothing but itself. Every request the page tries and every page or
// console error are collected for the caller to report.
import path from 'node:path';
import { pathToFileURL } from 'node:url';

export async function openOffline(pagePath, userDataDir, playwrightDir) {
  const { chromium } = await import(pathToFileURL(path.join(playwrightDir, 'index.mjs')).href);
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    offline: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-default-apps'],
  });
  const requests = [];
  const errors = [];
  await context.route('**/*', (route) => {
    const url = route.request().url();
    requests.push(url);
    return url.startsWith('file:') ? route.continue() : route.abort();
  });
  const page = await context.newPage();
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  const target = pathToFileURL(pagePath).href;
  await page.goto(target, { waitUntil: 'load' });
  return { context, page, requests, errors, target };
}
