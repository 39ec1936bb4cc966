// Drives the dashboard in headless Chromium (playwright-core, Debian's
// /usr/bin/chromium). Run by tests/dashboard.rs:
//   node dashboard.cjs BASE_URL SCREENSHOT NODE_A NODE_B
// It prints `listed` once both nodes show with their memory bars, waits
// for a line on stdin (the test has stopped NODE_B), then waits, without
// reloading the page, until NODE_B shows unhealthy, saves a screenshot
// and prints `unhealthy shown`.
"use strict";
const [base, shot, nodeA, nodeB] = process.argv.slice(2);
const { chromium } = require(process.env.STRATA_PLAYWRIGHT);

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.STRATA_CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(base + "/");
    for (const id of [nodeA, nodeB]) {
      await page.waitForSelector(`[data-node="${id}"] .bar .used`, { timeout: 15000 });
      const width = await page.$eval(`[data-node="${id}"] .bar .used`, (e) => e.getBoundingClientRect().width);
      if (!(width >= 2)) throw new Error(`node ${id}: the used-memory bar is ${width}px wide`);
      const bars = await page.$$eval(`[data-node="${id}"] .device`, (ds) => ds.length);
      if (bars < 1) throw new Error(`node ${id} shows no memory bar`);
      const health = await page.getAttribute(`[data-node="${id}"]`, "data-health");
      if (health !== "healthy") throw new Error(`node ${id} shows ${health}, not healthy`);
    }
    console.log("listed");
    await new Promise((resolve) => process.stdin.once("data", resolve));
    // A page that reloads loses this mark.
    await page.evaluate(() => { window.strataMark = true; });
    await page.waitForSelector(`[data-node="${nodeB}"][data-health="unhealthy"]`, { timeout: 20000 });
    if (!(await page.evaluate(() => window.strataMark === true))) {
      throw new Error("the page reloaded");
    }
    const other = await page.getAttribute(`[data-node="${nodeA}"]`, "data-health");
    if (other !== "healthy") throw new Error(`node ${nodeA} shows ${other}`);
    await page.waitForSelector('[data-kind="node_unhealthy"]', { timeout: 5000 });
    await page.screenshot({ path: shot, fullPage: true });
    console.log("unhealthy shown");
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
