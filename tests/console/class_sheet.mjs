// The class sheet of a notebook lesson in headless Chromium (issue 22): the
// lesson page shows each seat's link, who has opened theirs, and the
// teacher's pause button; the sheet has one row per seat with its link and
// a QR code, and prints to PDF without the console's navigation.
import { createRequire } from "node:module";
import path from "node:path";
import fs from "node:fs";
import assert from "node:assert/strict";

const require = createRequire(path.join(process.env.CONSOLE_NODE_DIR, "package.json"));
const { chromium } = require("playwright-core");

const base = new URL(process.env.CONSOLE_URL);
const out = process.env.SHOT_DIR;
const lessonId = process.env.LESSON_ID;
const seats = Number(process.env.SEATS);

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
try {
  const ctx = await browser.newContext({ viewport: { width: 1100, height: 900 }, locale: "en" });
  const page = await ctx.newPage();
  await page.goto(new URL("/console/lang?to=en", base).href);
  await page.goto(new URL("/console", base).href);
  await page.getByLabel(/Username/).fill("admin");
  await page.getByLabel(/Password/).fill(process.env.ADMIN_PASSWORD);
  await page.getByRole("button", { name: /Log in/ }).click();
  await page.waitForURL(/\/console$/);

  await page.goto(new URL(`/console/lessons/${lessonId}`, base).href);
  assert.equal(await page.locator("a.seat-link").count(), seats, "every seat shows its link");
  const opened = (await page.locator("#links-opened").innerText()).trim();
  assert.equal(opened, `${seats}/${seats}`, "every student opened their link");
  assert.ok(await page.locator("#links-pause").isVisible(), "the teacher can pause the class's links");
  assert.equal(await page.locator(".seat-actions").count(), seats, "each seat has its reset and stop buttons");
  await page.screenshot({ path: path.join(out, "console-en-lesson-links.png") });

  await page.locator("#class-sheet-link").click();
  await page.waitForURL(/\/sheet$/);
  const rows = page.locator("#class-sheet tr.sheet-seat");
  assert.equal(await rows.count(), seats, "one row per seat");
  assert.equal(await page.locator("#class-sheet td.qr svg").count(), seats, "a QR code per seat");
  const first = (await rows.first().locator(".seat-link").innerText()).trim();
  assert.match(first, /^https:\/\/.+\/seat\/[0-9a-f]{64}\/$/);
  await page.screenshot({ path: path.join(out, "console-en-class-sheet.png"), fullPage: true });
  const pdf = path.join(out, "class-sheet.pdf");
  await page.emulateMedia({ media: "print" });
  assert.ok(!(await page.locator("header").isVisible()), "the printed sheet has no navigation");
  await page.pdf({ path: pdf, format: "A4", printBackground: true });
  const bytes = fs.readFileSync(pdf);
  assert.equal(bytes.subarray(0, 5).toString(), "%PDF-", "a PDF");
  assert.ok(bytes.length > 2000, "a PDF with content");
  console.log(`ok class sheet: ${seats} rows, ${bytes.length} byte PDF`);
} finally {
  await browser.close();
}
