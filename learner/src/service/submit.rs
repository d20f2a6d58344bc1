//! `SubmitGroups` and `ReturnPrompts`: a worker's answers to a lease.

use std::time::Instant;

use asrl_common::rollout::{AdapterVersion, PromptWork};
use asrl_proto::v1 as pb;
use tonic::Status;

use super::leases::{FailureKind, GroupFate, LeaseError};
use super::limits::{truncate_utf8, MAX_RETURN_MESSAGE_BYTES};
use super::validate::{self, validate_groups, Submission};
use super::{unknown_worker, LearnerService};

fn lease_status(e: LeaseError) -> Status {
    match e {
        LeaseError::UnknownLease(_) | LeaseError::DuplicatePrompt(_) => Status::not_found(e.to_string()),
        LeaseError::WrongWorker { .. } => Status::permission_denied(e.to_string()),
        LeaseError::WrongVersion { .. } => Status::failed_precondition(e.to_string()),
    }
}

fn failure_kind(reason: i32) -> FailureKind {
    use pb::ReturnReason as R;
    match R::try_from(reason) {
        Ok(R::EngineError) => FailureKind::EngineError,
        Ok(R::RewardError) => FailureKind::RewardError,
        Ok(R::RewardOutOfBounds) => FailureKind::RewardOutOfBounds,
        Ok(R::AdapterUnavailable) => FailureKind::AdapterUnavailable,
        Ok(R::MalformedGroup) => FailureKind::MalformedGroup,
        Ok(R::Unspecified) | Err(_) => FailureKind::Unspecified,
    }
}

impl LearnerService {
    pub(super) fn submit(&self, req: pb::SubmitGroupsRequest) -> Result<pb::SubmitGroupsResponse, Status> {
        let now = Instant::now();
        let mut inner = self.shared.lock();
        if inner.touch(req.worker_id, now).is_none() {
            return Err(unknown_worker(req.worker_id));
        }
        let version = AdapterVersion::new(req.adapter_version);
        let lease = inner.leases.check_submission(req.lease_id, req.worker_id, version).map_err(lease_status)?;
        let prompts: Vec<&PromptWork> = lease.prompt_ids.iter().filter_map(|id| inner.leases.prompt(id)).collect();
        let submission = Submission {
            lease_id: req.lease_id,
            worker_id: req.worker_id,
            adapter_version: version,
            prompts: &prompts,
            sampling: inner.leases.sampling(),
            vocab_size: self.shared.opts.vocab_size,
            max_abs_reward: self.shared.opts.max_abs_reward,
        };
        let submitted = req.groups.len();
        let checked = validate_groups(req.groups, &submission)
            .and_then(|groups| validate::validate_timings(req.timings.as_ref()).map(|()| groups));
        let groups = match checked {
            Ok(groups) => groups,
            Err(e) => {
                // The worker answered, wrongly: its prompts go back to the queue now (a worker
                // that keeps doing so gets them abandoned), not at the lease deadline.
                inner.leases.reject_submission(req.lease_id, req.worker_id, submitted, &e.to_string());
                return Err(e.into());
            }
        };

        let latest = inner.latest_version();
        let ids: Vec<&str> = groups.iter().map(|g| g.prompt_id.as_str()).collect();
        let fates = inner.leases.apply_submission(req.lease_id, &ids, latest).map_err(|e| Status::not_found(e.to_string()))?;
        let mut out = Vec::new();
        let mut resp = pb::SubmitGroupsResponse::default();
        for (group, fate) in groups.into_iter().zip(fates) {
            match fate {
                GroupFate::Duplicate => resp.duplicates += 1,
                GroupFate::Stale => resp.stale += 1,
                GroupFate::Accepted => {
                    resp.accepted += 1;
                    out.push(group);
                }
            }
        }
        if let Some(w) = inner.registry.touch(req.worker_id, now) {
            w.groups_completed += resp.accepted as u64;
            w.lease_id = 0;
            if let Some(t) = &req.timings {
                if t.generation_seconds > 0.0 {
                    w.tokens_per_second = t.generated_tokens as f64 / t.generation_seconds;
                }
            }
        }
        drop(inner);
        for group in out {
            if self.shared.groups.send(group).is_err() {
                return Err(Status::unavailable("the training thread has stopped; results cannot be consumed"));
            }
        }
        if resp.duplicates > 0 || resp.stale > 0 {
            tracing::info!(lease_id = req.lease_id, accepted = resp.accepted, duplicates = resp.duplicates, stale = resp.stale, "submission partly ignored");
        }
        Ok(resp)
    }

    pub(super) fn return_prompts(&self, req: pb::ReturnPromptsRequest) -> Result<pb::ReturnPromptsResponse, Status> {
        let now = Instant::now();
        let mut inner = self.shared.lock();
        if inner.touch(req.worker_id, now).is_none() {
            return Err(unknown_worker(req.worker_id));
        }
        let lease = inner.leases.lease_record(req.lease_id).ok_or(LeaseError::UnknownLease(req.lease_id)).map_err(lease_status)?;
        if req.prompts.is_empty() || req.prompts.len() > lease.prompt_ids.len() {
            return Err(Status::invalid_argument(format!(
                "prompts: {} entries for a lease of {} prompts",
                req.prompts.len(),
                lease.prompt_ids.len()
            )));
        }
        let returns: Vec<(String, FailureKind, String)> = req
            .prompts
            .into_iter()
            .map(|p| {
                let message = truncate_utf8(&p.message, MAX_RETURN_MESSAGE_BYTES).to_string();
                (p.prompt_id, failure_kind(p.reason), message)
            })
            .collect();
        let out = inner.leases.return_prompts(req.lease_id, req.worker_id, &returns).map_err(lease_status)?;
        if let Some(w) = inner.registry.touch(req.worker_id, now) {
            w.lease_id = 0;
        }
        Ok(pb::ReturnPromptsResponse { requeued: out.requeued, abandoned: out.abandoned, ignored: out.ignored })
    }
}
