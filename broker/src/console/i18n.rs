//! zh-CN (the region's default) and English. Every visible word of the
//! console goes through [`t`], so a page never mixes languages.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    Zh,
    En,
}

impl Lang {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "zh-CN" | "zh" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }

    pub fn other(self) -> Self {
        match self {
            Lang::Zh => Lang::En,
            Lang::En => Lang::Zh,
        }
    }
}

/// (key, zh-CN, en)
const TEXT: &[(&str, &str, &str)] = &[
    ("mon", "周一", "Mon"),
    ("tue", "周二", "Tue"),
    ("wed", "周三", "Wed"),
    ("thu", "周四", "Thu"),
    ("fri", "周五", "Fri"),
    ("sat", "周六", "Sat"),
    ("sun", "周日", "Sun"),
    ("actor_system", "系统", "system"),
    ("actor_bootstrap", "初始化", "bootstrap"),
    ("actor_user", "用户", "user"),
    ("api_token", "API 令牌", "API token"),
    ("join_token", "加入令牌", "join token"),
    ("job", "作业", "job"),
    ("voucher", "算力券", "voucher"),
    ("voucher_low", "余额不足：剩余", "low balance:"),
    ("voucher_expires", "即将过期：", "expires"),
    ("accel_hours", "加速卡时", "accelerator-hours"),
    ("unused", "未用", "unused"),
    (
        "seats_today_chart",
        "今日课程座位",
        "Seats in today's lessons",
    ),
    ("seats_in_lessons", "课程占用座位", "seats in lessons"),
    ("seats_running_now", "当前运行座位", "seats running now"),
    (
        "capacity_chart",
        "各厂商加速卡显存与已预留",
        "Accelerator memory by vendor, and what is reserved",
    ),
    ("app", "classgrid 区域控制台", "classgrid region console"),
    ("skip", "跳到正文", "Skip to content"),
    ("nav", "主导航", "Main navigation"),
    ("overview", "总览", "Overview"),
    ("nodes", "节点", "Nodes"),
    ("timetable", "课表", "Timetable"),
    ("lessons", "课程", "Lessons"),
    ("jobs", "作业", "Jobs"),
    ("vouchers", "算力券与用量", "Vouchers and usage"),
    ("tokens", "令牌", "Tokens"),
    ("audit", "审计日志", "Audit log"),
    ("regions", "区域互联", "Regions"),
    ("unreachable_since", "失联起始于", "unreachable since"),
    ("peer_region", "对端区域", "Peer region"),
    ("inter_region_rtt", "区域间时延", "Inter-region RTT"),
    ("lends", "出借策略", "Lends it"),
    (
        "lent_borrowed",
        "借出 / 借入课程",
        "Lessons lent / borrowed",
    ),
    (
        "no_peers",
        "尚未与其他区域互联（classgrid peers offer）",
        "No peer regions yet (classgrid peers offer)",
    ),
    ("logout", "退出登录", "Log out"),
    ("login", "登录", "Log in"),
    ("username", "用户名", "Username"),
    ("password", "密码", "Password"),
    (
        "login_failed",
        "用户名或密码错误。",
        "Wrong username or password.",
    ),
    ("switch_lang", "English", "中文"),
    (
        "times_in",
        "时间按区域时区显示",
        "Times in the region's time zone",
    ),
    ("live", "实时更新", "Live"),
    ("sites", "站点", "Sites"),
    ("site", "站点", "Site"),
    ("kind", "类型", "Kind"),
    ("district", "学区", "District"),
    ("health", "健康", "Health"),
    ("node", "节点", "Node"),
    ("tier", "层级", "Tier"),
    ("state", "状态", "State"),
    ("devices", "设备", "Devices"),
    ("device", "设备", "Device"),
    ("vendor", "厂商", "Vendor"),
    ("model", "型号", "Model"),
    ("memory", "显存", "Memory"),
    ("used", "已用", "Used"),
    ("reserved", "已预留", "Reserved"),
    (
        "capacity_by_vendor",
        "按厂商统计的容量与使用",
        "Capacity and use per vendor",
    ),
    ("seats_live", "正在上课的座位", "Seats live now"),
    ("replicas", "调度服务副本", "Broker replicas"),
    ("replica_leader", "主", "leader"),
    ("replica_standby", "备", "standby"),
    ("leader_epoch", "任期", "epoch"),
    ("lessons_today", "今日课程", "Lessons today"),
    ("staging_now", "正在预置", "Staging in progress"),
    ("alerts", "告警", "Alerts"),
    ("no_alerts", "没有告警。", "No alerts."),
    ("alert_disconnected", "节点失联", "Node disconnected"),
    ("alert_failed_seat", "座位失败", "Seat failed"),
    ("alert_voucher", "算力券", "Voucher"),
    ("none", "无", "None"),
    ("samples", "个样本", "samples"),
    ("filter", "筛选", "Filter"),
    ("all", "全部", "All"),
    ("search", "名称包含", "Name contains"),
    ("apply", "应用", "Apply"),
    ("cordoned", "已封锁", "Cordoned"),
    ("cordon", "封锁", "Cordon"),
    ("uncordon", "解除封锁", "Uncordon"),
    ("awaiting_approval", "待批准", "Awaiting approval"),
    ("approve", "批准", "Approve"),
    ("require_approval", "节点须经批准", "Nodes need approval"),
    (
        "alert_awaiting_approval",
        "节点待批准",
        "Node awaiting approval",
    ),
    ("drain", "排空", "Drain"),
    ("actions", "操作", "Actions"),
    ("slices", "切片", "Slices"),
    ("isolation", "隔离", "Isolation"),
    ("max_slices", "最多切片", "Max slices"),
    ("assignments", "分配", "Assignments"),
    (
        "utilisation",
        "利用率（最近 6 小时）",
        "Utilisation (last 6 hours)",
    ),
    ("no_samples", "尚无采样数据。", "No samples yet."),
    (
        "rtt_from_sites",
        "各站点到本节点的 RTT",
        "RTT from each site",
    ),
    ("warnings", "发现警告", "Discovery warnings"),
    ("runtimes", "运行时", "Runtimes"),
    ("last_seen", "最近心跳", "Last seen"),
    ("relayed_by", "经站点边缘中继", "Relayed by site edge"),
    ("source", "来源", "Source"),
    ("measured_at", "测量时间", "Measured at"),
    ("day", "日", "Day"),
    ("week", "周", "Week"),
    ("prev", "上一段", "Previous"),
    ("next", "下一段", "Next"),
    ("by_school", "按学校", "Per school"),
    ("by_node", "按节点", "Per node"),
    ("legend_staging", "预置提前量", "Staging lead"),
    ("legend_lesson", "上课时间", "Lesson"),
    ("legend_grace", "宽限期", "Grace"),
    (
        "no_lessons",
        "这段时间没有课程。",
        "No lessons in this period.",
    ),
    ("lesson", "课程", "Lesson"),
    ("school", "学校", "School"),
    ("start", "开始", "Start"),
    ("end", "结束", "End"),
    ("seats", "座位", "Seats"),
    ("seat_map", "座位图", "Seat map"),
    ("seat", "座位", "Seat"),
    ("rtt", "RTT", "RTT"),
    ("endpoint", "访问地址", "Endpoint"),
    ("message", "消息", "Message"),
    ("explanation", "调度说明", "Placement explanation"),
    ("window", "预留窗口", "Reserved window"),
    ("max_rtt", "最大 RTT", "Max RTT"),
    ("name", "名称", "Name"),
    ("priority", "优先级", "Priority"),
    ("created", "创建时间", "Created"),
    ("no_jobs", "没有作业。", "No jobs."),
    ("balances", "余额", "Balances"),
    ("issued", "发放", "Issued"),
    ("held", "冻结", "Held"),
    ("charged", "已扣", "Charged"),
    ("expired", "已过期", "Expired"),
    ("balance", "余额", "Balance"),
    ("hours", "卡时", "acc.-hours"),
    ("ledger", "账本（最近 50 条）", "Ledger (latest 50)"),
    ("amount", "数量", "Amount"),
    ("at", "时间", "At"),
    ("note", "备注", "Note"),
    ("usage_by_month", "每月用量", "Usage per month"),
    ("no_vouchers", "没有算力券。", "No vouchers."),
    ("api_tokens", "API 令牌", "API tokens"),
    ("join_tokens", "加入令牌", "Join tokens"),
    ("create_api_token", "创建 API 令牌", "Create an API token"),
    ("create_join_token", "创建加入令牌", "Create a join token"),
    ("role", "角色", "Role"),
    ("sites_comma", "站点（逗号分隔）", "Sites (comma-separated)"),
    (
        "ttl_s",
        "有效期（秒，0 为默认）",
        "Lifetime (seconds, 0 = default)",
    ),
    ("uses", "可用次数", "Uses"),
    ("create", "创建", "Create"),
    ("revoke", "吊销", "Revoke"),
    ("revoked", "已吊销", "Revoked"),
    ("active", "有效", "Active"),
    ("expires", "到期", "Expires"),
    ("never", "永不", "Never"),
    ("created_by", "创建者", "Created by"),
    (
        "secret_once",
        "请立即复制此密钥：它只显示这一次。",
        "Copy this secret now: it is shown only once.",
    ),
    ("actor", "操作者", "Actor"),
    ("action", "动作", "Action"),
    ("target", "对象", "Target"),
    ("result", "结果", "Result"),
    ("detail", "详情", "Detail"),
    ("since", "起始时间（本地）", "Since (local time)"),
    ("error", "出错了", "Something went wrong"),
    (
        "not_found",
        "找不到该对象，或您无权查看。",
        "Not found, or not yours to see.",
    ),
    (
        "forbidden",
        "您的角色不能执行此操作。",
        "Your role may not do this.",
    ),
    ("invalid", "输入有误：", "Invalid input:"),
    ("done", "已完成。", "Done."),
    ("back", "返回", "Back"),
    ("signed_in_as", "当前用户", "Signed in as"),
    ("connected", "在线", "connected"),
    ("disconnected", "失联", "disconnected"),
    ("lost", "丢失", "lost"),
    ("cpu", "CPU", "CPU"),
    ("cores", "核", "cores"),
    ("cpu_cores", "CPU 核数", "CPU cores"),
    ("failed_seats", "失败座位", "Failed seats"),
    ("cancel_lesson", "取消课程", "Cancel lesson"),
    (
        "cancel_confirm",
        "确定取消这节课？所有座位将被释放。",
        "Cancel this lesson? Every seat is released.",
    ),
    ("command", "命令", "Command"),
    ("class_sheet", "班级座位单", "Class sheet"),
    ("reset_seat", "重启座位", "Reset"),
    ("reset_seat_wipe", "重启并清空作业", "Reset, wipe work"),
    ("stop_seat", "停止座位", "Stop"),
    ("seat_link", "学生链接", "Student link"),
    ("link_opened", "已打开", "Opened"),
    ("link_not_opened", "尚未打开", "Not opened yet"),
    ("pause_links", "暂停全班链接", "Pause the class's links"),
    ("resume_links", "恢复全班链接", "Resume the class's links"),
    (
        "links_paused",
        "全班链接已暂停，学生将看到“老师已暂停”。",
        "The class's links are paused; students see \"paused by your teacher\".",
    ),
    (
        "print",
        "用浏览器打印（<kbd>Ctrl</kbd>+<kbd>P</kbd>）即可得到纸质座位单。",
        "Print it from the browser (<kbd>Ctrl</kbd>+<kbd>P</kbd>) for a paper sheet.",
    ),
    (
        "opened_count",
        "已打开链接的学生",
        "Students who opened their link",
    ),
    (
        "no_seat_links",
        "该学校的边缘网关尚未提供座位链接（见 <code>CLASSGRID_SEAT_LINKS_LISTEN</code>）。",
        "This school's edge does not serve seat links yet (see <code>CLASSGRID_SEAT_LINKS_LISTEN</code>).",
    ),
    (
        "sheet_hint",
        "每位学生用平板扫描自己座位的二维码，或输入链接。链接只打开本人的座位，课程结束后失效。",
        "Each student scans their seat's QR code with their tablet, or types the link. A link opens only its own seat and stops at the lesson's end.",
    ),
    (
        "output_tail",
        "程序最后的输出",
        "Last output of the program",
    ),
    (
        "ttl_hours",
        "有效期（如 24h、7d；留空为默认）",
        "Lifetime (e.g. 24h, 7d; empty = default)",
    ),
    (
        "approve_hint",
        "节点凭加入令牌加入。若令牌要求批准，节点在区管理员批准前不会被调度；否则签发令牌即批准。",
        "Nodes join with a join token. If the token requires approval, no work is placed on the node until a district admin approves it; otherwise issuing the token is the approval.",
    ),
    ("term_import", "导入学期课表", "Import a term's timetable"),
    (
        "term_sheet",
        "课表（CSV，可从表格软件另存为 CSV UTF-8）",
        "Timetable (CSV; save the spreadsheet as CSV UTF-8)",
    ),
    ("term_template", "下载模板", "Download the template"),
    (
        "term_file",
        "上传表格（<code>.xlsx</code> 或 <code>CSV</code>；选了文件时以文件为准，先预览）",
        "Upload the sheet (<code>.xlsx</code> or <code>CSV</code>; a chosen file is used instead of the text, and previewed first)",
    ),
    ("term_policy", "订课规则", "Policy"),
    ("term_policy_all", "全部或不订", "All or nothing"),
    (
        "term_policy_fit",
        "能订的先订，其余说明原因",
        "Book what fits, explain the rest",
    ),
    (
        "term_command",
        "每个座位运行的命令（运行时为 <code>notebook</code> 时可留空）",
        "What each seat runs (empty for <code>runtime=notebook</code>)",
    ),
    (
        "term_preview",
        "预览（不写入、不占用）",
        "Preview (writes nothing, holds nothing)",
    ),
    ("term_commit", "确认导入", "Commit the timetable"),
    (
        "term_cost",
        "本学期算力券花费（最坏情况）",
        "Voucher cost of the term (worst case)",
    ),
    ("term_fit", "可订课次", "occurrences that fit"),
    ("term_refused", "冲突课次", "occurrences in conflict"),
    (
        "term_bad",
        "表格有错误，未订任何课程：",
        "The sheet has errors; nothing was booked:",
    ),
    ("term_booked", "已导入", "Booked"),
    ("series", "系列课程", "Series"),
    ("occurrence", "课次", "Occurrence"),
    ("reason", "原因", "Reason"),
];

/// (group, value, zh-CN, en): the words that come from data (states,
/// kinds, roles), which a page shows through [`word`] so that zh-CN pages
/// never show the English value.
const WORDS: &[(&str, &str, &str, &str)] = &[
    // Lesson lifecycle.
    ("state", "booked", "已预订", "booked"),
    ("state", "staging", "预置中", "staging"),
    ("state", "ready", "就绪", "ready"),
    ("state", "live", "上课中", "live"),
    ("state", "ended", "已结束", "ended"),
    ("state", "cancelled", "已取消", "cancelled"),
    // Seats, assignments and jobs.
    ("state", "planned", "已规划", "planned"),
    ("state", "staged", "已预置", "staged"),
    ("state", "pending", "待启动", "pending"),
    ("state", "starting", "启动中", "starting"),
    ("state", "running", "运行中", "running"),
    ("state", "released", "已释放", "released"),
    ("state", "failed", "失败", "failed"),
    ("state", "replaced", "已替换", "replaced"),
    ("state", "exited", "已退出", "exited"),
    ("state", "stopped", "已停止", "stopped"),
    ("state", "queued", "排队中", "queued"),
    ("state", "succeeded", "已成功", "succeeded"),
    ("state", "preempted", "已被抢占", "preempted"),
    // Nodes.
    ("state", "connected", "在线", "connected"),
    ("state", "disconnected", "失联", "disconnected"),
    ("state", "lost", "丢失", "lost"),
    ("state", "cordoned", "已封锁", "cordoned"),
    ("state", "awaiting_approval", "待批准", "awaiting approval"),
    // Lessons with failed seats (decision 079).
    ("state", "degraded", "部分座位失败", "degraded"),
    ("state", "all_failed", "座位全部失败", "all seats failed"),
    ("role", "platform", "课程平台", "platform"),
    ("role", "school_admin", "学校管理员", "school admin"),
    ("role", "district_admin", "区管理员", "district admin"),
    ("ledger", "issue", "发放", "issue"),
    ("ledger", "hold", "冻结", "hold"),
    ("ledger", "charge", "扣费", "charge"),
    ("ledger", "release", "解冻", "release"),
    ("ledger", "expiry", "过期", "expiry"),
    ("site_kind", "school", "学校", "school"),
    (
        "site_kind",
        "district_pop",
        "学区接入点",
        "district point of presence",
    ),
    ("site_kind", "cloud", "云", "cloud"),
    ("tier", "edge", "边缘", "edge"),
    // Where an RTT comes from (placement's RttSource).
    ("rtt_source", "measured", "实测", "measured"),
    ("rtt_source", "estimated", "估算", "estimated"),
    ("rtt_source", "configured", "配置", "configured"),
    // Seat runtimes a node offers (the kinds `agent/src/runtime` has).
    ("runtime", "process", "进程", "process"),
    ("runtime", "container", "容器", "container"),
    ("runtime", "notebook", "笔记本", "notebook"),
    // How strongly a slice is isolated on its device.
    ("isolation", "hard", "硬隔离", "hard"),
    ("isolation", "soft", "软隔离", "soft"),
    ("isolation", "none", "不隔离", "none"),
    ("tier", "cloud", "云", "cloud"),
    ("join_kind", "agent", "节点代理", "agent"),
    ("join_kind", "edge", "站点边缘", "edge"),
    ("assignment_kind", "seat", "座位", "seat"),
    ("assignment_kind", "job", "作业", "job"),
    ("state", "ok", "成功", "ok"),
    ("state", "denied", "拒绝", "denied"),
    ("state", "error", "出错", "error"),
];

/// A value from the data (a state, kind or role) in the page's language;
/// an unknown value is shown as it is, since it may be a name.
pub fn word(lang: Lang, group: &str, value: &str) -> String {
    match WORDS.iter().find(|(g, v, _, _)| *g == group && *v == value) {
        Some((_, _, zh, en)) => match lang {
            Lang::Zh => zh.to_string(),
            Lang::En => en.to_string(),
        },
        None => value.to_string(),
    }
}

pub fn t(lang: Lang, key: &str) -> &'static str {
    match TEXT.iter().find(|(k, _, _)| *k == key) {
        Some((_, zh, en)) => match lang {
            Lang::Zh => zh,
            Lang::En => en,
        },
        None => {
            debug_assert!(false, "console text `{key}` is missing");
            "?"
        }
    }
}

/// Phrases of placement explanations (broker/placement: `explain.rs`,
/// `engine.rs` and each filter's `detail`) in zh-CN, longest first so that
/// a phrase wins over the words inside it. Explanations are stored in
/// English, the API's language, when a lesson is placed; the console
/// translates them when it shows them. Names, numbers and units stay.
const EXPLAIN_ZH: &[(&str, &str)] = &[
    (
        "other nodes not read (none could rank higher)",
        "个其他节点未读取日程（均不可能排名更高）",
    ),
    (
        "other node not read (none could rank higher)",
        "个其他节点未读取日程（均不可能排名更高）",
    ),
    ("kept for owner school's classes", "留给所属学校的课程"),
    ("capacity freed by preempting jobs", "通过抢占作业腾出容量"),
    ("the school's own site", "本校站点"),
    ("an unknown site", "未知站点"),
    ("invalid request:", "请求无效："),
    ("fewer than", "少于"),
    ("devices with", "个设备，每个"),
    ("calendar busy", "日程已占满"),
    ("not approved", "未批准"),
    ("not ready", "未就绪"),
    ("no device", "无合适设备"),
    ("no runtime", "无运行时"),
    ("no gpu", "无加速卡"),
    ("gpu memory", "显存"),
    ("cpu/memory", "CPU/内存"),
    ("min lead", "分钟准备时间"),
    ("mean rtt", "平均往返时延"),
    ("district pop", "学区接入点"),
    ("preempts", "抢占"),
    ("job(s)", "个作业"),
    ("seats on", "个座位，分布于"),
    ("seats fit", "个座位可放置"),
    ("nodes", "个节点"),
    ("node", "节点"),
    ("staging", "预置"),
    ("measured", "实测"),
    ("estimated", "估算"),
    ("configured", "配置"),
    ("score", "评分"),
    ("cached", "缓存"),
    ("packing", "紧凑度"),
    ("tier", "层级"),
    ("rtt", "往返时延"),
    ("model", "型号"),
    ("school", "学校"),
    ("cloud", "云"),
    ("edge", "边缘"),
    ("gpu", "加速卡"),
    (" at ", " 位于 "),
    (" on ", " 于 "),
];

/// A placement explanation (summary, seat reason or filter detail) in the
/// page's language. Node and site names pass through, except where a name
/// is itself one of the phrases above.
pub fn explanation(lang: Lang, text: &str) -> String {
    if lang == Lang::En {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() * 2);
    let mut rest = text;
    'outer: while !rest.is_empty() {
        // A phrase only where a word starts, so that `node` inside a name
        // such as `gpu-node-3` is left alone.
        let at_word = out
            .chars()
            .last()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        if at_word {
            for (en, zh) in EXPLAIN_ZH {
                if let Some(after) = rest.strip_prefix(en) {
                    let ends_word = en.ends_with(' ')
                        || after
                            .chars()
                            .next()
                            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'));
                    if ends_word {
                        out.push_str(zh);
                        rest = after;
                        continue 'outer;
                    }
                }
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_has_both_languages_and_keys_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for (k, zh, en) in TEXT {
            assert!(seen.insert(*k), "duplicate key {k}");
            assert!(!zh.is_empty() && !en.is_empty(), "{k}");
        }
    }

    #[test]
    fn every_state_of_the_schema_has_a_chinese_word() {
        for st in [
            "booked",
            "staging",
            "ready",
            "live",
            "ended",
            "cancelled",
            "planned",
            "staged",
            "starting",
            "running",
            "released",
            "failed",
            "replaced",
            "pending",
            "exited",
            "stopped",
            "queued",
            "succeeded",
        ] {
            let zh = word(Lang::Zh, "state", st);
            assert!(!zh.is_ascii(), "state {st} has no zh-CN word");
        }
        assert_eq!(word(Lang::Zh, "role", "district_admin"), "区管理员");
        assert_eq!(word(Lang::En, "ledger", "hold"), "hold");
        assert_eq!(word(Lang::Zh, "state", "some-name"), "some-name");
    }

    #[test]
    fn chinese_is_the_default() {
        assert_eq!(Lang::default(), Lang::Zh);
        assert_eq!(t(Lang::default(), "overview"), "总览");
        assert_eq!(t(Lang::En, "overview"), "Overview");
    }
    #[test]
    fn unread_nodes_and_score_terms_read_in_chinese() {
        let zh = explanation(
            Lang::Zh,
            "2/2 seats on 1 node, mean rtt 2.0 ms; 1 other node not read (none could rank higher); \
             score 0.95 = rtt 0.96×0.5 + cached 1.00×0.2 + tier 1.00×0.2 + packing 0.70×0.1",
        );
        let latin: Vec<&str> = zh
            .split(|c: char| !c.is_ascii_alphabetic())
            .filter(|w| w.len() >= 3)
            .collect();
        assert!(latin.is_empty(), "{zh}: {latin:?}");
        assert!(zh.contains("1 个其他节点未读取日程"), "{zh}");
    }

    #[test]
    fn placement_explanations_read_in_chinese_and_keep_names() {
        let zh = explanation(
            Lang::Zh,
            "3/45 seats fit on 2/2 nodes: 2 cpu/memory < 500 m/512 MiB, 1 rtt > 30 ms (configured)",
        );
        assert!(
            zh.contains("个座位可放置") && zh.contains("CPU/内存"),
            "{zh}"
        );
        assert!(zh.contains("往返时延 > 30 ms (配置)"), "{zh}");
        let reason = explanation(
            Lang::Zh,
            "node gpu-node-1 (edge) at the school's own site: gpu 0 L40S (4096 MiB, 25%); rtt 1.2 ms (measured); score 0.91 = rtt 0.95×1",
        );
        assert!(
            reason.starts_with("节点 gpu-node-1 (边缘) 位于 本校站点"),
            "{reason}"
        );
        // What remains in Latin letters is names, models and units only.
        let latin: Vec<&str> = reason
            .split(|c: char| !c.is_ascii_alphabetic())
            .filter(|w| !w.is_empty())
            .collect();
        assert_eq!(latin, ["gpu", "node", "L", "S", "MiB", "ms"], "{reason}");
        assert_eq!(explanation(Lang::En, "1 calendar busy"), "1 calendar busy");
    }
}
