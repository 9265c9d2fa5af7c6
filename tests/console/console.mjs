// Drives the console in headless Chromium (Debian's package) with
// playwright-core. Every step checks visible content and saves a
// screenshot; any request to a host other than the broker fails the run.
import { createRequire } from "node:module";
import path from "node:path";
import assert from "node:assert/strict";

const require = createRequire(path.join(process.env.CONSOLE_NODE_DIR, "package.json"));
const { chromium } = require("playwright-core");

const base = new URL(process.env.CONSOLE_URL);
const shots = process.env.SHOT_DIR;
const lessonId = process.env.LESSON_ID;

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const foreign = [];
const failures = [];

async function session() {
  const ctx = await browser.newContext({ viewport: { width: 1366, height: 768 }, ignoreHTTPSErrors: true });
  const page = await ctx.newPage();
  current = page;
  page.on("request", (r) => {
    const u = new URL(r.url());
    if ((u.protocol === "http:" || u.protocol === "https:") && u.host !== base.host) foreign.push(r.url());
  });
  page.on("response", (r) => { if (r.status() >= 500) failures.push(`${r.status()} ${r.url()}`); });
  page.on("pageerror", (e) => failures.push(`script error: ${e.message}`));
  return { ctx, page };
}

let current = null;
process.on("unhandledRejection", () => {});
async function failed(e) {
  // The page as it was when a check failed: a screenshot and its text.
  if (current) {
    await current.screenshot({ path: path.join(shots, "FAILED.png") }).catch(() => {});
    console.error(`at ${current.url()}:\n${await current.locator("body").innerText().catch(() => "")}`);
  }
  console.error(e);
  process.exit(1);
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: false });
  console.log(`ok ${name}`);
}

async function text(page, sel) {
  return (await page.locator(sel).first().innerText()).trim();
}

async function login(page, user, password) {
  await page.goto(new URL("/console", base).href);
  assert.match(page.url(), /\/console\/login$/, "an anonymous visit goes to the login form");
  await page.getByLabel(/用户名|Username/).fill(user);
  await page.getByLabel(/密码|Password/).fill(password);
  await page.getByRole("button", { name: /登录|Log in/ }).click();
  await page.waitForURL(/\/console$/);
}

// Words of the page's own UI left in English on a zh-CN page. Data is
// not UI: code, keys and output (<code>, <kbd>, <pre>), what a person types into a
// field (<textarea>: the timetable's CSV), text marked as another language
// (an agent's discovery warnings carry lang="en"), and the names that this
// test's fixture gives sites, nodes, users, tokens and devices, pass.
const DATA_WORDS = new Set(["school", "gpu", "cpu", "admin", "teacher", "nvidia", "NVIDIA", "MiB", "GiB",
  "CPU", "API", "Python", "python", "http", "https", "platform", "English", "demo", "LOCAL", "L40S", "e2e", "GPU",
  "RTT", "CSV", "UTF", // technical terms kept in zh-CN, as CPU and API are
  "token", // the test's admin token is named admin-token
  "north", "south"]); // the peer regions
async function untranslated(page) {
  const words = await page.evaluate(() => {
    const skip = new Set(["CODE", "KBD", "PRE", "SCRIPT", "STYLE", "TITLE", "TEXTAREA"]);
    const out = [];
    const walk = (n) => {
      for (const c of n.childNodes) {
        if (c.nodeType === 3) out.push(c.textContent);
        else if (c.nodeType === 1 && !skip.has(c.tagName) && !(c.getAttribute("lang") ?? "zh").startsWith("en")) walk(c);
      }
    };
    walk(document.querySelector("main") ?? document.body);
    return out.join(" ").match(/[A-Za-z]{3,}/g) ?? [];
  });
  return [...new Set(words.filter((w) => !DATA_WORDS.has(w)))];
}
async function allChinese(page, what) {
  const left = await untranslated(page);
  assert.deepEqual(left, [], `${what}: English words on a zh-CN page: ${left.join(" ")}`);
}

try {
// --- district admin -------------------------------------------------------
{
  const { ctx, page } = await session();
  await page.goto(new URL("/console/login", base).href);
  await page.getByLabel("用户名").fill("admin");
  await page.getByLabel("密码").fill("wrong password!");
  await page.getByRole("button", { name: "登录" }).click();
  assert.match(await text(page, "[role=alert]"), /用户名或密码错误/);
  await shot(page, "login");

  await login(page, "admin", process.env.ADMIN_PASSWORD);
  assert.equal(await page.getAttribute("html", "lang"), "zh-CN", "Chinese by default");
  assert.equal(await text(page, "h1"), "总览");
  await page.waitForFunction(() => Number(document.getElementById("seats-live")?.textContent) >= 2, null, { timeout: 20000 });
  assert.match(await text(page, "main"), /school-a/);
  assert.match(await text(page, "main"), /nvidia/i, "capacity per vendor lists the GPU");
  assert.match(await text(page, "main"), /Python 入门/, "today's lesson is listed");
  assert.match(await text(page, "main"), /节点待批准: cpu-a2/, "a node awaiting approval is an alert");
  // The live channel (Server-Sent Events) is open.
  await page.waitForFunction(() => document.getElementById("live-status")?.textContent.startsWith("●"), null, { timeout: 10000 });
  // A district admin would rather look than read: seats over today, and
  // accelerator memory by vendor with what is reserved of it.
  assert.ok(await page.locator("#seats-today-chart svg.plot").isVisible(), "the seats-today chart is drawn");
  assert.match(await text(page, "#seats-today-chart"), /课程占用座位/, "the chart's legend is in zh-CN");
  assert.match(await page.locator("#capacity-chart svg").innerHTML(), /nvidia ×1/, "capacity by vendor is drawn");
  await allChinese(page, "overview");
  await shot(page, "overview");

  await page.getByRole("navigation").getByRole("link", { name: "节点" }).click();
  await page.waitForURL(/\/console\/nodes$/);
  const table = await text(page, "#nodes-table");
  assert.match(table, /gpu-a1/);
  assert.match(table, /cpu-b1/);
  await page.getByLabel("站点").selectOption("school-b");
  await page.getByRole("button", { name: "应用" }).click();
  await page.waitForURL(/site=school-b/);
  assert.doesNotMatch(await text(page, "#nodes-table"), /gpu-a1/, "the site filter hides other sites");
  await allChinese(page, "nodes");
  await shot(page, "nodes");

  // A node that joined with a token requiring approval waits, visibly, and
  // the district admin approves it from its page.
  await page.goto(new URL("/console/nodes", base).href);
  await page.getByLabel("状态").selectOption("awaiting_approval");
  await page.getByRole("button", { name: "应用" }).click();
  await page.waitForURL(/state=awaiting_approval/);
  const waiting = await text(page, "#nodes-table");
  assert.match(waiting, /cpu-a2/);
  assert.match(waiting, /待批准/);
  assert.doesNotMatch(waiting, /gpu-a1/, "the filter shows only nodes awaiting approval");
  await page.getByRole("link", { name: "cpu-a2" }).click();
  assert.equal(await text(page, "#approval-state"), "待批准");
  await shot(page, "node-awaiting-approval");
  await page.getByRole("button", { name: "批准", exact: true }).click();
  await page.locator("#approval-state").waitFor({ state: "detached" });
  assert.match(await text(page, "h1"), /cpu-a2/, "back on the node's page");
  assert.equal(await page.getByRole("button", { name: "批准", exact: true }).count(), 0, "approved: no button");
  await shot(page, "node-approved");

  await page.goto(new URL("/console/nodes", base).href);
  await page.getByRole("link", { name: "gpu-a1" }).click();
  assert.match(await text(page, "h1"), /gpu-a1/);
  const detail = await text(page, "main");
  assert.match(detail, /L40S/);
  assert.match(detail, /隔离/);
  assert.match(detail, /硬隔离|软隔离|不隔离/, "the isolation level in zh-CN");
  assert.match(detail, /发现警告/);
  await page.waitForSelector("svg.plot", { timeout: 20000 }).catch(async () => {
    await page.reload();
    await page.waitForSelector("svg.plot", { timeout: 10000 });
  });
  await allChinese(page, "node");
  await page.getByRole("button", { name: "封锁" }).click();
  await page.waitForSelector("#cordon-state");
  assert.equal(await text(page, "#cordon-state"), "已封锁");
  assert.ok(await page.getByRole("button", { name: "解除封锁" }).isVisible());
  await shot(page, "node-cordoned");

  await page.getByRole("navigation").getByRole("link", { name: "课表" }).click();
  assert.ok(await page.locator("svg.gantt").isVisible(), "the Gantt chart is drawn");
  assert.match(await text(page, "#timetable-lessons"), /Python 入门/);
  await allChinese(page, "timetable");
  await shot(page, "timetable");
  // The day view is the school day: its first hour line is 07:00 unless a
  // lesson starts earlier.
  assert.match(await page.locator("svg.gantt").innerHTML(), />0[0-7]:00</, "the day axis starts at the school day");
  await page.getByRole("link", { name: "周" }).click();
  await page.waitForURL(/view=week/);
  assert.match(await text(page, "#timetable-lessons"), /Python 入门/);
  const days = await page.locator("svg.gantt text.day").allTextContents();
  assert.match(days[0], /周一$/, `the week starts on Monday: ${days.join(", ")}`);
  assert.equal(days.length, 7, "one column per day");
  await shot(page, "timetable-week");
  await page.getByRole("link", { name: "按节点" }).click();
  await page.waitForURL(/by=node/);

  // A term's timetable (issue 26): the preview shows every class in a week
  // grid, the class that cannot fit in red with the reason on hover, and
  // the term's cost; one button commits it; a series shows as a series.
  await page.goto(new URL("/console/timetable", base).href);
  await page.locator("#term-import").click();
  await page.waitForURL(/\/console\/timetable\/import$/);
  const header = (await page.locator("#csv").inputValue()).split("\n")[0];
  assert.match(header, /班级 class/, "the template's bilingual header");
  const day = (n) => new Date(Date.now() + n * 86400000).toISOString().slice(0, 10);
  const spec = "cpu=10 mem=16 runtime=process";
  await page.locator("#csv").fill(`${header}\n7-1,school-a,MO,09:00,40,1,${spec},,,${day(2)},${day(15)},\n`
    + `7-2,school-a,TU,09:00,40,900,${spec},,,${day(2)},${day(15)},\n`);
  await page.locator("#policy").selectOption("book_what_fits");
  await page.locator("#command").fill("sleep 60");
  await page.locator("#term-preview").click();
  await page.waitForSelector("#term-grid");
  const red = page.locator("#term-grid td.conflict");
  assert.equal(await red.count(), 1, "the class that cannot fit is red");
  assert.match(await red.getAttribute("title"), /seats fit/, "with the reason on hover");
  assert.equal(await red.evaluate((e) => getComputedStyle(e).backgroundColor), "rgb(253, 226, 226)", "drawn red");
  assert.match(await text(page, "#term-summary"), /^2 \S+ · 2 /, "2 occurrences fit, 2 do not");
  await allChinese(page, "term preview");
  await shot(page, "term-preview");
  await page.locator("#term-commit").click();
  await page.waitForSelector("#term-series");
  await page.locator("#term-series a").first().click();
  await page.waitForURL(/\/console\/series\//);
  assert.equal(await page.locator("#series-occurrences a").count(), 2, "each occurrence links to its lesson");
  await allChinese(page, "series");
  await shot(page, "series");
  const seriesUrl = page.url();

  // The school's own .xlsx workbook, uploaded: previewed first, its rows
  // shown as CSV in the text, then committed with the one button.
  await page.goto(new URL("/console/timetable/import", base).href);
  await page.locator("#file").setInputFiles(process.env.TERM_XLSX);
  await page.locator("#command").fill("sleep 60");
  await page.locator("#term-preview").click();
  await page.waitForSelector("#term-grid");
  assert.match(await text(page, "#term-grid"), /8-1/, "the workbook's class in the grid");
  assert.equal(await page.locator("#term-grid td.conflict").count(), 0, "it fits");
  assert.match(await page.locator("#csv").inputValue(), /^class,school,weekday,start time.*\n8-1,school-a,周三,11:00,40,1,/s,
    "the workbook's rows as CSV, for the commit");
  await page.locator("#term-commit").click();
  await page.waitForSelector("#term-series");
  assert.match(await text(page, "#term-series"), /8-1/, "the workbook's class booked as a series");
  // A file that is neither a workbook nor UTF-8 text is named, nothing booked.
  await page.goto(new URL("/console/timetable/import", base).href);
  await page.locator("#file").setInputFiles({ name: "term.xls", mimeType: "application/vnd.ms-excel",
    buffer: Buffer.from([0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1, 0xff]) });
  await page.locator("#term-preview").click();
  await page.waitForSelector("#term-errors");
  assert.match(await text(page, "#term-errors"), /file .*xlsx/, "the bad file is named with the rule");
  await shot(page, "term-bad-file");
  // A file past the form's limit is named with the limit, not a bare 400.
  await page.goto(new URL("/console/timetable/import", base).href);
  await page.locator("#file").setInputFiles({ name: "huge.csv", mimeType: "text/csv",
    buffer: Buffer.alloc(3 << 20, "a") });
  await page.locator("#term-preview").click();
  await page.waitForSelector("#term-errors");
  assert.match(await text(page, "#term-errors"), /file .*2 MB/, "the file's size limit is named");

  await page.goto(new URL("/console/timetable", base).href);
  await page.locator("#timetable-lessons").getByRole("link", { name: "Python 入门" }).click();
  await page.waitForURL(new RegExp(`/console/lessons/${lessonId}$`));
  const seats = await text(page, "#seat-map");
  assert.match(seats, /座位 0/);
  assert.match(seats, /座位 1/);
  assert.match(seats, /运行中/, "states in zh-CN, not English");
  assert.match(seats, /ms \((实测|估算|配置)/, "RTT with its source, in zh-CN");
  assert.match(seats, /http:\/\/127\.0\.0\.1:\d+/, "each seat's endpoint");
  assert.ok((await text(page, "#explanation-summary")).length > 0, "the placement explanation");
  assert.match(await text(page, "#explanation-summary"), /个座位/, "the placement explanation in zh-CN");
  assert.doesNotMatch(await text(page, "#explanation-summary"), /\b(seats|nodes|mean rtt)\b/, "no English in it");
  await allChinese(page, "lesson");
  await shot(page, "lesson");

  await page.getByRole("navigation").getByRole("link", { name: "作业" }).click();
  assert.equal(await text(page, "h1"), "作业");
  await allChinese(page, "jobs");
  await shot(page, "jobs");
  await page.getByRole("navigation").getByRole("link", { name: "算力券与用量" }).click();
  assert.equal(await text(page, "h1"), "算力券与用量");
  assert.ok(await page.locator("#balances").isVisible());
  await allChinese(page, "vouchers");
  await shot(page, "vouchers");

  await page.getByRole("navigation").getByRole("link", { name: "令牌" }).click();
  await page.getByLabel("名称").fill("e2e-platform");
  await page.getByLabel("角色").selectOption("platform");
  await page.getByLabel("站点（逗号分隔）").fill("school-a");
  await page.getByRole("button", { name: "创建" }).first().click();
  const secret = await text(page, "#new-secret");
  assert.match(secret, /^cg_[0-9a-f]{32}_/, "the API token's secret is shown once");
  await shot(page, "token-created");
  await page.goto(new URL("/console/tokens", base).href);
  assert.doesNotMatch(await text(page, "main"), new RegExp(secret), "the secret is not shown again");
  const row = page.locator("#api-tokens tr", { hasText: "e2e-platform" });
  await row.getByRole("button", { name: /吊销/ }).click();
  await page.waitForURL(/\/console\/tokens$/);
  assert.match(await page.locator("#api-tokens tr", { hasText: "e2e-platform" }).innerText(), /已吊销/);
  assert.match(await page.locator("#api-tokens tr", { hasText: "e2e-platform" }).innerText(), /用户 admin/, "the creator by name");
  // Join tokens pin the region CA, so a broker without TLS says so plainly.
  await page.locator("#join-site").selectOption("school-a");
  const [joinResp] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/console/tokens/join")),
    page.getByRole("button", { name: "创建" }).nth(1).click(),
  ]);
  if (base.protocol === "https:") {
    assert.match(await text(page, "#new-secret"), /^cgjoin_/, "a join token is shown once");
  } else {
    assert.equal(joinResp.status(), 409);
    assert.match(await text(page, "[role=alert]"), /TLS/);
    await page.goto(new URL("/console/tokens", base).href);
  }
  await allChinese(page, "tokens");
  await shot(page, "token-revoked");

  await page.getByRole("navigation").getByRole("link", { name: "审计日志" }).click();
  const audit = await text(page, "#audit-table");
  for (const a of ["node.cordon", "node.approve", "token.create", "token.revoke", "console.login"]) assert.match(audit, new RegExp(a.replace(".", "\\.")));
  // Names, not ids: the console user, the node and the token by name.
  assert.match(audit, /用户 admin/);
  assert.match(audit, /节点 school-a\/gpu-a1/);
  assert.match(audit, /API 令牌 e2e-platform/);
  assert.doesNotMatch(audit, /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-/, "no UUID in the audit log");
  await page.getByLabel("动作").fill("node.");
  await page.getByRole("button", { name: "应用" }).click();
  assert.doesNotMatch(await text(page, "#audit-table"), /token\.create/, "the action filter applies");
  await allChinese(page, "audit");
  await shot(page, "audit");

  // The Regions page lists the peer region with its state, RTT and what
  // this region lends it (issue 21).
  await page.goto(new URL("/console/regions", base).href);
  const regions = await text(page, "#regions-table");
  assert.match(regions, /north/, "the peer region is listed");
  assert.match(regions, /6\.0 ms/, "with its inter-region RTT");
  await allChinese(page, "regions");
  await shot(page, "regions");
  // The class sheet a teacher prints: one row per seat, in zh-CN too.
  await page.goto(new URL(`/console/lessons/${lessonId}/sheet`, base).href);
  await allChinese(page, "class sheet");
  await shot(page, "class-sheet");
  await page.goto(new URL("/console/audit", base).href);

  await page.getByRole("link", { name: "English" }).click();
  await page.waitForURL(/\/console\/audit/);
  assert.equal(await page.getAttribute("html", "lang"), "en");
  assert.equal(await text(page, "h1"), "Audit log");
  await page.getByRole("navigation").getByRole("link", { name: "Overview" }).click();
  assert.equal(await text(page, "h1"), "Overview");
  await shot(page, "english");
  // Every page in English too, for docs/screenshots.
  for (const [name, url] of [["overview", "/console"], ["nodes", "/console/nodes"], ["timetable", "/console/timetable"],
    ["timetable-week", "/console/timetable?view=week"], ["lesson", `/console/lessons/${lessonId}`], ["jobs", "/console/jobs"],
    ["vouchers", "/console/vouchers"], ["tokens", "/console/tokens"], ["audit", "/console/audit"],
    ["regions", "/console/regions"], ["term-import", "/console/timetable/import"], ["series", seriesUrl],
    ["login", "/console/login"]]) {
    await page.goto(new URL(url, base).href);
    assert.equal(await page.getAttribute("html", "lang"), "en", `${name} stays in English`);
    await page.screenshot({ path: path.join(shots, `en-${name}.png`), fullPage: true });
  }
  await page.goto(new URL("/console/nodes", base).href);
  await page.getByRole("link", { name: "gpu-a1" }).click();
  await page.screenshot({ path: path.join(shots, "en-node.png"), fullPage: true });
  await page.goto(new URL("/console", base).href);

  // Keyboard: the skip link is the first stop and lands on the content.
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement?.className), "skip");

  await page.getByRole("button", { name: "Log out" }).click();
  await page.waitForURL(/\/console\/login$/);
  await page.goto(new URL("/console/nodes", base).href);
  assert.match(page.url(), /\/console\/login$/, "logged out means signed out");
  await ctx.close();
}

// --- a school admin sees only their school ----------------------------------
{
  const { ctx, page } = await session();
  await login(page, "teacher-b", process.env.SCHOOL_PASSWORD);
  await page.goto(new URL("/console/nodes", base).href);
  const table = await text(page, "#nodes-table");
  assert.match(table, /cpu-b1/);
  assert.doesNotMatch(table, /gpu-a1/, "another school's node is not shown");
  const resp = await page.goto(new URL(`/console/lessons/${lessonId}`, base).href);
  assert.equal(resp.status(), 404, "another school's lesson does not exist for them");
  await page.goto(new URL("/console/nodes", base).href);
  await page.getByRole("link", { name: "cpu-b1" }).click();
  assert.equal(await page.getByRole("button", { name: "封锁" }).count(), 0, "read-only: no cordon button");
  await shot(page, "school-admin");
  await ctx.close();
}

} catch (e) {
  await failed(e);
}
await browser.close();
assert.deepEqual(foreign, [], "no request may go to a host other than the broker");
assert.deepEqual(failures, [], "no server error or script error");
console.log("console browser test: all steps passed");
