// Drives the admin dashboard in the distribution's headless Chromium for tests/dashboard.rs,
// and reads it as a person would: the text that is visible on the page, nothing else.
//
//   node dashboard.mjs <url>
//
// A line protocol on stdin/stdout, one command and one answer per line, so the Rust test
// can change the world (stop a backend) between looks at the same, never reloaded, page:
//   rows                            -> ROWS <json: [{upstream, backend, state, text}]>
//   wait <backend> <state> <ms>     -> OK <backend> <state> <elapsed ms> | FAIL <why>
//   click <css selector>            -> ROWS <json> (after a person's click on it)
//   reason <backend>                -> REASON <its reason, if shown whole> | FAIL
//   screenshot <path>               -> SAVED <path>
//   text                            -> TEXT <json: the page's visible text>
//   quit                            -> BYE (then exits 0)
// Before the first command it prints READY <json rows> once every backend row shows (or
// FAIL and exits 1). Every answer also reports page errors and document loads: the test
// wants none of the first and exactly one of the second. The whole run is bounded.

import { chromium } from 'playwright-core';
import readline from 'node:readline';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WHOLE_RUN_MS = 120_000;
const FIRST_ROWS_MS = 20_000;

const url = process.argv[2];
if (!url) {
  console.log('FAIL usage: node dashboard.mjs <url>');
  process.exit(2);
}

const say = (line) => process.stdout.write(line + '\n');
const problems = [];
let navigations = 0;
let browser;

const deadline = setTimeout(async () => {
  say('FAIL the browser run took longer than ' + WHOLE_RUN_MS + ' ms');
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}, WHOLE_RUN_MS);

async function rows(page) {
  // innerText is what is rendered: hidden text is not in it.
  return page.$$eval('tr[data-backend]', (trs) =>
    trs.map((tr) => ({
      upstream: tr.dataset.upstream,
      backend: tr.dataset.backend,
      state: tr.querySelector('td.state').innerText.trim(),
      text: tr.innerText.replace(/\s+/g, ' ').trim(),
    })),
  );
}

function status() {
  return JSON.stringify({ navigations, problems });
}

async function main() {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // A fresh profile each run (Playwright makes a temporary user-data-dir and removes it).
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.on('pageerror', (err) => problems.push('page error: ' + err.message));
  page.on('console', (msg) => {
    // A Content-Security-Policy violation or a failed poll shows here.
    if (msg.type() === 'error') problems.push('console: ' + msg.text());
  });
  // Document loads: the page clearing the token from its URL (history.replaceState) is a
  // same-document navigation and does not count, a reload does.
  page.on('load', () => {
    navigations++;
  });
  await page.goto(url, { waitUntil: 'load', timeout: FIRST_ROWS_MS });
  try {
    await page.waitForSelector('tr[data-backend]', { state: 'visible', timeout: FIRST_ROWS_MS });
  } catch (err) {
    say('FAIL no backend row became visible: ' + (await page.innerText('body')).replace(/\s+/g, ' ').slice(0, 2000) + ' ' + status());
    await browser.close();
    process.exit(1);
  }
  say('READY ' + JSON.stringify(await rows(page)) + ' ' + status());

  const input = readline.createInterface({ input: process.stdin, terminal: false });
  for await (const line of input) {
    const [command, ...args] = line.trim().split(/\s+/);
    if (command === 'rows') {
      say('ROWS ' + JSON.stringify(await rows(page)) + ' ' + status());
    } else if (command === 'wait') {
      const [backend, state, ms] = args;
      const started = Date.now();
      const cell = page.locator(`tr[data-backend="${backend}"] td.state`);
      try {
        // Polls the rendered text until it reads `state`; the page polls its feed meanwhile.
        await page.waitForFunction(
          ([b, s]) => {
            const td = document.querySelector(`tr[data-backend="${b}"] td.state`);
            return !!td && td.innerText.trim() === s;
          },
          [backend, state],
          { timeout: Number(ms), polling: 100 },
        );
        const visible = await cell.isVisible();
        if (!visible) throw new Error('the state cell is not visible');
        say(`OK ${backend} ${state} ${Date.now() - started} ` + status());
      } catch (err) {
        const now = await rows(page).catch(() => []);
        say(`FAIL ${backend} did not show ${state} within ${ms} ms: ${err.message.split('\n')[0]} rows=${JSON.stringify(now)} ` + status());
      }
    } else if (command === 'click') {
      try {
        await page.locator(args.join(' ')).first().click({ timeout: 5000 });
        say('ROWS ' + JSON.stringify(await rows(page)) + ' ' + status());
      } catch (err) {
        say('FAIL click ' + args.join(' ') + ': ' + err.message.split('\n')[0]);
      }
    } else if (command === 'reason') {
      // Only a reason shown whole counts: a cut-off one (ellipsis) is not what a person reads.
      const answer = await page.evaluate((b) => {
        const td = document.querySelector(`tr[data-backend="${b}"] td.why`);
        if (!td) return null;
        const clipped = getComputedStyle(td).whiteSpace === 'nowrap' && td.scrollWidth > td.clientWidth;
        return clipped ? null : td.innerText.trim();
      }, args[0]);
      say(answer === null ? 'FAIL the reason of ' + args[0] + ' is missing or cut off' : 'REASON ' + answer);
    } else if (command === 'screenshot') {
      await page.screenshot({ path: args[0], fullPage: true });
      say('SAVED ' + args[0]);
    } else if (command === 'text') {
      say('TEXT ' + JSON.stringify(await page.innerText('body')));
    } else if (command === 'quit') {
      break;
    } else {
      say('FAIL unknown command ' + JSON.stringify(line));
    }
  }
  await browser.close();
  clearTimeout(deadline);
  say('BYE');
}

main().catch(async (err) => {
  say('FAIL ' + String(err && err.stack ? err.stack : err).replace(/\s+/g, ' '));
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
});
