//! The Slurm runtime: the agent stands for a whole Slurm cluster (or one
//! partition of it). Capacity is read with `scontrol show nodes`; a seat is a
//! batch job submitted with `sbatch`, tracked with `squeue` (and `scontrol
//! show job` for its exit code) and stopped with `scancel`. The commands talk
//! to slurmctld the usual way (`SLURM_CONF`, munge), so the agent runs on a
//! login or head node, and the state folder must be on a file system the
//! compute nodes share (seats write their output there).

use std::{path::Path, process::Stdio, time::Duration};

use classgrid_proto::v1 as pb;
use futures::future::BoxFuture;

use super::{Handle, Probe, Runtime, StartSpec};

const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Default)]
pub struct SlurmOptions {
    /// Only this partition's nodes are offered and used; empty means the
    /// cluster's default partition.
    pub partition: Option<String>,
    /// Memory of one GPU (GRES `gpu`), which Slurm does not know; GPUs are
    /// offered only when it is set.
    pub gpu_memory_mib: u64,
}

pub struct SlurmRuntime {
    opts: SlurmOptions,
}

/// Runs a Slurm command with a timeout; stdout on success, a message naming
/// the command otherwise.
async fn run(program: &str, args: &[String]) -> Result<String, String> {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(COMMAND_TIMEOUT, child).await {
        Err(_) => Err(format!(
            "`{program}` did not answer within {COMMAND_TIMEOUT:?}"
        )),
        Ok(Err(e)) => Err(format!("cannot run `{program}`: {e}")),
        Ok(Ok(out)) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Ok(Ok(out)) => Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// `Key=Value` pairs of one line of `scontrol show ... -o` output. Values may
/// contain spaces only in fields we do not read (`Reason=`, `OS=`), so a
/// plain split is enough for the ones we do.
pub fn fields(line: &str) -> Vec<(&str, &str)> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .collect()
}

fn field<'a>(f: &[(&'a str, &'a str)], key: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// One compute node as `scontrol show nodes -o` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmNode {
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub state: String,
    pub partitions: Vec<String>,
    /// GPUs from `Gres=gpu[:TYPE]:N[(S:..)]`, as (type, count).
    pub gpus: Vec<(String, u32)>,
}

impl SlurmNode {
    /// Nodes that are down, drained or failing take no new work.
    pub fn usable(&self) -> bool {
        let s = self.state.to_ascii_uppercase();
        ![
            "DOWN",
            "DRAIN",
            "FAIL",
            "NOT_RESPONDING",
            "FUTURE",
            "POWERED_DOWN",
            "MAINT",
        ]
        .iter()
        .any(|bad| s.contains(bad))
    }
}

/// Parses `Gres=` (for example `gpu:tesla:2(S:0-1),shard:8`).
pub fn parse_gres(gres: &str) -> Vec<(String, u32)> {
    gres.split(',')
        .filter_map(|g| {
            let g = g.split('(').next()?;
            let mut parts = g.split(':');
            if parts.next()? != "gpu" {
                return None;
            }
            let rest: Vec<&str> = parts.collect();
            match rest.as_slice() {
                [n] => Some(("gpu".to_string(), n.parse().ok()?)),
                [ty, n] => Some((ty.to_string(), n.parse().ok()?)),
                _ => None,
            }
        })
        .collect()
}

pub fn parse_nodes(text: &str) -> Vec<SlurmNode> {
    text.lines()
        .filter(|l| l.starts_with("NodeName="))
        .filter_map(|l| {
            let f = fields(l);
            Some(SlurmNode {
                name: field(&f, "NodeName")?.to_string(),
                cpus: field(&f, "CPUTot")?.parse().ok()?,
                memory_mib: field(&f, "RealMemory")?.parse().ok()?,
                state: field(&f, "State").unwrap_or("UNKNOWN").to_string(),
                partitions: field(&f, "Partitions")
                    .map(|p| p.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
                gpus: field(&f, "Gres").map(parse_gres).unwrap_or_default(),
            })
        })
        .collect()
}

/// The cluster's capacity as one classgrid node, and what could not be offered.
pub fn capacity(nodes: &[SlurmNode], opts: &SlurmOptions) -> (pb::NodeCapacity, Vec<String>) {
    let mut warnings = Vec::new();
    let chosen: Vec<&SlurmNode> = nodes
        .iter()
        .filter(|n| match &opts.partition {
            Some(p) => n.partitions.iter().any(|x| x == p),
            None => true,
        })
        .filter(|n| n.usable())
        .collect();
    let cpus: u64 = chosen.iter().map(|n| n.cpus as u64).sum();
    let memory: u64 = chosen.iter().map(|n| n.memory_mib).sum();
    let mut devices = Vec::new();
    for n in &chosen {
        for (ty, count) in &n.gpus {
            if opts.gpu_memory_mib == 0 {
                warnings.push(format!(
                    "slurm: node {} has {count} GPU(s) (GRES gpu:{ty}) that are not offered: set --slurm-gpu-memory-mib to their memory",
                    n.name
                ));
                continue;
            }
            for _ in 0..*count {
                devices.push(pb::DeviceInfo {
                    index: devices.len() as i32,
                    vendor: "nvidia".into(),
                    model: format!("{ty} on {}", n.name).chars().take(128).collect(),
                    uuid: String::new(),
                    memory_mib: opts.gpu_memory_mib.min(1 << 20) as i64,
                    memory_used_mib: 0,
                    utilization_percent: 0,
                    healthy: true,
                    // Slurm hands out whole GPUs (GRES), so one job per GPU.
                    max_slices: 1,
                    isolation: pb::Isolation::Hard as i32,
                });
            }
        }
    }
    if chosen.is_empty() {
        warnings.push(match &opts.partition {
            Some(p) => format!("slurm: partition `{p}` has no usable node"),
            None => "slurm: the cluster has no usable node".to_string(),
        });
    }
    (
        pb::NodeCapacity {
            cpu_millis: (cpus * 1000).clamp(1, 1_024_000) as i32,
            memory_mib: memory.clamp(1, 16 * 1024 * 1024) as i64,
            devices,
        },
        warnings,
    )
}

fn quote(s: &str) -> String {
    shlex::try_quote(s)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| "''".into())
}

/// The batch script: the seat's variables, then the command, with no shell
/// interpretation of either.
pub fn batch_script(spec: &StartSpec) -> anyhow::Result<String> {
    let argv = spec.argv()?;
    if spec.workload()?.command.is_empty() || argv.is_empty() {
        anyhow::bail!("workload.command: is required for the slurm runtime");
    }
    if argv
        .iter()
        .chain(spec.env.iter().map(|(_, v)| v))
        .any(|s| s.contains('\0'))
    {
        anyhow::bail!("workload: must not contain NUL bytes");
    }
    let mut s = String::from("#!/bin/sh\n# Written by classgrid-agent for one seat.\n");
    for (k, v) in &spec.env {
        s.push_str(&format!("export {k}={}\n", quote(v)));
    }
    let words: Vec<String> = argv.iter().map(|a| quote(a)).collect();
    s.push_str(&format!("exec {}\n", words.join(" ")));
    Ok(s)
}

/// `sbatch` arguments for one seat; the time limit ends the job at the
/// assignment's end even if the agent is gone.
pub fn sbatch_args(
    spec: &StartSpec,
    opts: &SlurmOptions,
    script: &std::path::Path,
    now_ms: i64,
) -> Vec<String> {
    let a = &spec.assign;
    let minutes =
        ((a.ends_unix_ms - now_ms).max(0) / 1000 + a.grace_seconds.max(0) as i64 + 59) / 60;
    let mut args = vec![
        "--parsable".to_string(),
        format!("--job-name=classgrid-{}", a.assignment_id),
        format!("--comment=classgrid-assignment={}", a.assignment_id),
        format!("--output={}", spec.work_dir.join("output.log").display()),
        format!("--chdir={}", spec.work_dir.display()),
        "--ntasks=1".into(),
        format!("--cpus-per-task={}", ((a.cpu_millis.max(1) + 999) / 1000)),
        format!("--time={}", minutes.max(1)),
    ];
    // --mem=0 would mean "all of the node's memory".
    if a.memory_mib > 0 {
        args.push(format!("--mem={}M", a.memory_mib));
    }
    if let Some(p) = &opts.partition {
        args.push(format!("--partition={p}"));
    }
    if !spec.slices.is_empty() {
        args.push(format!("--gres=gpu:{}", spec.slices.len()));
    }
    args.push(script.display().to_string());
    args
}

/// Job states after which the job will not run again.
fn terminal(state: &str) -> bool {
    matches!(
        state,
        "COMPLETED"
            | "FAILED"
            | "CANCELLED"
            | "TIMEOUT"
            | "NODE_FAIL"
            | "PREEMPTED"
            | "OUT_OF_MEMORY"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "SPECIAL_EXIT"
    )
}

/// `ExitCode=CODE:SIGNAL`; a job killed by a signal has no exit code.
pub fn parse_exit(scontrol_job: &str) -> Option<i32> {
    let f = fields(scontrol_job);
    let (code, sig) = field(&f, "ExitCode")?.split_once(':')?;
    (sig == "0").then(|| code.parse().ok()).flatten()
}

impl SlurmRuntime {
    pub fn new(opts: SlurmOptions) -> Self {
        Self { opts }
    }
}

impl Runtime for SlurmRuntime {
    fn kind(&self) -> &'static str {
        "slurm"
    }

    fn start(&self, spec: StartSpec) -> BoxFuture<'_, anyhow::Result<Handle>> {
        Box::pin(async move {
            std::fs::create_dir_all(&spec.work_dir)?;
            let script = spec.work_dir.join("seat.sh");
            std::fs::write(&script, batch_script(&spec)?)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            let out = run("sbatch", &sbatch_args(&spec, &self.opts, &script, now))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            // --parsable prints `JOBID` or `JOBID;CLUSTER`.
            let job_id = out.trim().split(';').next().unwrap_or("").to_string();
            if job_id.is_empty() || !job_id.chars().all(|c| c.is_ascii_digit() || c == '_') {
                anyhow::bail!("sbatch printed no job id: `{}`", out.trim());
            }
            Ok(Handle::Slurm { job_id })
        })
    }

    fn probe<'a>(&'a self, handle: &'a Handle) -> BoxFuture<'a, Probe> {
        Box::pin(async move {
            let Handle::Slurm { job_id } = handle else {
                return Probe::Gone;
            };
            let q = run(
                "squeue",
                &[
                    "-h".into(),
                    "-t".into(),
                    "all".into(),
                    "-j".into(),
                    job_id.clone(),
                    "-o".into(),
                    "%T %B".into(),
                ],
            )
            .await;
            let line = match q {
                Ok(out) => out.lines().next().unwrap_or("").trim().to_string(),
                Err(e) if e.contains("Invalid job id") => String::new(),
                Err(e) => return Probe::Unknown(e),
            };
            let mut parts = line.split_whitespace();
            let state = parts.next().unwrap_or("");
            let host = parts.next().filter(|h| *h != "(null)" && !h.is_empty());
            match state {
                "" => Probe::Gone,
                "RUNNING" | "COMPLETING" | "SUSPENDED" => Probe::Running {
                    host: host.map(str::to_string),
                    ready: false,
                },
                s if terminal(s) => {
                    let exit = run(
                        "scontrol",
                        &["show".into(), "job".into(), "-o".into(), job_id.clone()],
                    )
                    .await
                    .ok()
                    .and_then(|t| parse_exit(&t));
                    Probe::Exited(if s == "COMPLETED" || s == "FAILED" {
                        exit
                    } else {
                        None
                    })
                }
                _ => Probe::Pending,
            }
        })
    }

    fn stop<'a>(
        &'a self,
        handle: &'a Handle,
        grace: Duration,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let Handle::Slurm { job_id } = handle.clone() else {
                anyhow::bail!("not a slurm handle");
            };
            // SIGTERM to every step and the batch shell first, then the full
            // cancel (Slurm's own SIGTERM/SIGKILL) after the grace period.
            let term = run(
                "scancel",
                &["--signal=TERM".into(), "--full".into(), job_id.clone()],
            )
            .await;
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                let _ = run("scancel", &[job_id]).await;
            });
            match term {
                Err(e) if !e.contains("Invalid job id") && !e.contains("already completing") => {
                    Err(anyhow::anyhow!("{e}"))
                }
                _ => Ok(()),
            }
        })
    }

    fn output_tail<'a>(&'a self, _h: &'a Handle, work_dir: &'a Path) -> BoxFuture<'a, String> {
        Box::pin(async move { super::file_tail(&work_dir.join("output.log"), 2048) })
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn cluster_capacity(&self) -> BoxFuture<'_, Option<(pb::NodeCapacity, Vec<String>)>> {
        Box::pin(async move {
            let nodes = match run("scontrol", &["show".into(), "nodes".into(), "-o".into()]).await {
                Ok(t) => parse_nodes(&t),
                Err(e) => return Some((empty_capacity(), vec![format!("slurm: {e}")])),
            };
            Some(capacity(&nodes, &self.opts))
        })
    }
}

/// What a cluster that cannot be read offers: nothing schedulable, but a
/// valid report so that the node still shows, with its warning.
pub fn empty_capacity() -> pb::NodeCapacity {
    pb::NodeCapacity {
        cpu_millis: 1,
        memory_mib: 1,
        devices: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Recorded from `scontrol show nodes -o` on the one-machine Slurm 22.05
    // that scripts/lib.sh starts, plus a GPU node line in the same format.
    const NODES: &str = "NodeName=vm Arch=x86_64 CoresPerSocket=1  CPUAlloc=0 CPUEfctv=64 CPUTot=64 CPULoad=2.18 AvailableFeatures=(null) ActiveFeatures=(null) Gres=(null) NodeAddr=vm NodeHostName=vm Version=22.05.8 OS=Linux 6.18.44-fc-v445 #1 SMP PREEMPT_DYNAMIC @0  RealMemory=65536 AllocMem=0 FreeMem=418 Sockets=64 Boards=1 State=IDLE ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A Partitions=classgrid  BootTime=2026-11-22T02:10:13 SlurmdStartTime=2026-11-22T02:38:09 LastBusyTime=2026-11-22T02:38:09 CfgTRES=cpu=64,mem=64G,billing=64 AllocTRES= CapWatts=n/a CurrentWatts=0 AveWatts=0 ExtSensorsJoules=n/s ExtSensorsWatts=0 ExtSensorsTemp=n/s\n\
NodeName=g1 Arch=x86_64 CPUTot=32 Gres=gpu:t4:2(S:0-1) RealMemory=128000 State=MIXED Partitions=gpu,classgrid\n\
NodeName=g2 Arch=x86_64 CPUTot=32 Gres=gpu:2 RealMemory=128000 State=DOWN+DRAIN Partitions=gpu\n";

    #[test]
    fn cluster_capacity_sums_usable_nodes_of_the_partition() {
        let nodes = parse_nodes(NODES);
        assert_eq!(nodes.len(), 3);
        let opts = SlurmOptions {
            partition: Some("classgrid".into()),
            gpu_memory_mib: 15360,
        };
        let (cap, warnings) = capacity(&nodes, &opts);
        assert_eq!(cap.cpu_millis, 96_000);
        assert_eq!(cap.memory_mib, 65536 + 128000);
        assert_eq!(
            cap.devices.len(),
            2,
            "the drained node's GPUs are not offered"
        );
        assert_eq!(cap.devices[1].index, 1);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn gpus_without_known_memory_are_not_offered_and_say_so() {
        let (cap, warnings) = capacity(&parse_nodes(NODES), &SlurmOptions::default());
        assert!(cap.devices.is_empty());
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("--slurm-gpu-memory-mib")),
            "{warnings:?}"
        );
    }

    #[test]
    fn gres_strings_are_parsed_with_and_without_type() {
        assert_eq!(
            parse_gres("gpu:tesla:2(S:0-1),shard:8"),
            vec![("tesla".to_string(), 2)]
        );
        assert_eq!(parse_gres("gpu:4"), vec![("gpu".to_string(), 4)]);
        assert!(parse_gres("(null)").is_empty());
    }

    #[test]
    fn exit_code_is_read_only_when_no_signal_ended_the_job() {
        assert_eq!(
            parse_exit("JobId=7 JobState=COMPLETED ExitCode=0:0"),
            Some(0)
        );
        assert_eq!(parse_exit("JobId=7 JobState=FAILED ExitCode=3:0"), Some(3));
        assert_eq!(parse_exit("JobId=7 JobState=CANCELLED ExitCode=0:15"), None);
    }

    #[test]
    fn batch_script_quotes_every_word_and_value() {
        let spec = StartSpec {
            assign: pb::Assign {
                assignment_id: "a1".into(),
                workload: Some(pb::Workload {
                    command: "python3".into(),
                    args: vec!["-c".into(), "print('$(PORT)'); x=1; `rm -rf /`".into()],
                    ..Default::default()
                }),
                ..Default::default()
            },
            work_dir: "/tmp/w".into(),
            env: vec![("PORT".into(), "8123".into()), ("X".into(), "a b'c".into())],
            port: 8123,
            slices: vec![],
        };
        let s = batch_script(&spec).unwrap();
        assert!(
            s.contains("export X='a b'\\''c'") || s.contains("export X=\"a b'c\""),
            "{s}"
        );
        assert!(s.contains("exec python3 -c "), "{s}");
        assert!(s.contains("8123"), "$(PORT) is expanded: {s}");
        assert!(!s.contains("\nrm"), "{s}");
    }
}
