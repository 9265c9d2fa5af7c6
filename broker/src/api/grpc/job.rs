use classgrid_proto::v1::{self as pb, job_service_server::JobService};
use tonic::{Request, Response, Status};

use super::{convert, status};
use crate::{auth::gate::caller, domain::lesson::RawJob, state::App};

pub struct Jobs(pub App);

#[tonic::async_trait]
impl JobService for Jobs {
    async fn submit(
        &self,
        req: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let raw = RawJob {
            request_id: r.request_id,
            school_site: r.school_site,
            name: r.name,
            spec: r.spec.as_ref().map(convert::raw_seat),
            workload: convert::workload(r.workload.as_ref()),
            max_runtime_seconds: r.max_runtime_seconds,
            priority: r.priority as i64,
            preemptible: r.preemptible,
            grace_seconds: r.grace_seconds as i64,
        };
        let j = self.0.scoped(&c).submit_job(raw).await.map_err(status)?;
        Ok(Response::new(convert::job(&j)))
    }

    async fn get(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let c = caller(&req)?;
        let id = convert::parse_id("id", &req.get_ref().id).map_err(status)?;
        Ok(Response::new(convert::job(
            &self.0.scoped(&c).job(id).await.map_err(status)?,
        )))
    }

    async fn cancel(
        &self,
        req: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let c = caller(&req)?;
        let id = convert::parse_id("id", &req.get_ref().id).map_err(status)?;
        Ok(Response::new(convert::job(
            &self.0.scoped(&c).cancel_job(id).await.map_err(status)?,
        )))
    }

    async fn list(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let c = caller(&req)?;
        let state = Some(req.get_ref().state.as_str()).filter(|s| !s.is_empty());
        let jobs = self
            .0
            .scoped(&c)
            .console_jobs(state)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.iter().map(convert::job).collect(),
        }))
    }
}
