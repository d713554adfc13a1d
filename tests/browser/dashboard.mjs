// Loads the Arc dashboard in headless Chromium, enters the control-API token, waits for the
// routes of the running Arc, then waits until the request rate of one route rises (the Rust
// test drives load meanwhile) and saves a screenshot. Prints one JSON line with what it saw;
// exits non-zero on any failure.
//
// usage: node dashboard.mjs <ui-url> <token> <route-name> <screenshot-path> [chromium-path]
import { chromium } from "playwright-core";

const [url, token, route, screenshot, executable] = process.argv.slice(2);
if (!url || !token || !route || !screenshot) {
  console.error("usage: node dashboard.mjs <ui-url> <token> <route-name> <screenshot-path> [chromium-path]");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: executable || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  timeout: 60000,
});
let code = 1;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const consoleErrors = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  await page.goto(url, { waitUntil: "load", timeout: 30000 });
  await page.locator("#token").waitFor({ state: "visible", timeout: 15000 });
  await page.fill("#token", token);
  await page.click("#login button[type=submit]");
  const row = page.locator(`#routes tbody tr[data-route="${route}"]`);
  await row.waitFor({ state: "visible", timeout: 15000 });
  const routes = await page.locator("#routes tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.route));
  const backends = await page.locator("#routes tbody tr td:nth-child(4)").allTextContents();
  // The rate needs two samples; load runs meanwhile, so it must become positive.
  const rates = [];
  const deadline = Date.now() + 30000;
  let rate = 0;
  while (Date.now() < deadline) {
    const text = (await row.locator("td.rate").textContent()) || "";
    rates.push(text);
    rate = parseFloat(text);
    if (rate > 0) break;
    await page.waitForTimeout(500);
  }
  const upstreamRows = await page.locator("#upstreams tbody tr").count();
  // Pool state per endpoint: idle pooled and active connections, as numbers.
  const pool = (await page.locator("#upstreams tbody td.pool-idle, #upstreams tbody td.pool-active").allTextContents());
  const poolNumeric = pool.length === 2 * upstreamRows && pool.every((t) => /^\d+$/.test(t.trim()));
  const version = await page.locator("#config-version").textContent();
  await page.screenshot({ path: screenshot, fullPage: true });
  const ok = rate > 0 && routes.includes(route) && upstreamRows > 0 && poolNumeric;
  console.log(JSON.stringify({ ok, routes, backends, rates, upstreamRows, pool, version, consoleErrors }));
  code = ok ? 0 : 1;
} catch (e) {
  console.error(String(e && e.stack || e));
} finally {
  await browser.close();
}
process.exit(code);
