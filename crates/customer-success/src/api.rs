//! `themodel.customersuccess.v1.CustomerSuccessService`: parse requests into
//! domain types, run the domain rules in one transaction, map errors.

use serde_json::json;
use themodel_proto::customersuccess::v1 as pb;
use themodel_proto::customersuccess::v1::customer_success_service_server::CustomerSuccessService;
use themodel_runtime::error::{ApiError, ApiResult};
use themodel_runtime::events::NewEvent;
use themodel_runtime::idempotency::Idempotency;
use themodel_runtime::time::to_timestamp_opt;
use themodel_runtime::validate::{self, Violations};
use themodel_runtime::values::Money;
use themodel_runtime::{Clock, Db, Tx, ids, paging};
use tonic::{Request, Response, Status};

use crate::domain::{Account, Refused, Status as AccountStatus, WonDeal};
use crate::store;

/// The customer-success service's handlers.
#[derive(Debug, Clone)]
pub struct Api {
    pub db: Db,
    pub clock: Clock,
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> ApiError {
        ApiError::precondition("STATE", "account", r.to_string())
    }
}

pub fn account_to_proto(a: &Account) -> pb::Account {
    pb::Account {
        account_id: a.account_id.clone(),
        opportunity_id: a.opportunity_id.clone(),
        lead_id: a.lead_id.clone(),
        company: a.company.clone(),
        contact_name: a.contact_name.clone(),
        contact_email: a.contact_email.clone(),
        status: match a.status {
            AccountStatus::Active => pb::AccountStatus::Active,
            AccountStatus::Churned => pb::AccountStatus::Churned,
        } as i32,
        contract_value: Some(a.contract_value.to_proto()),
        term_months: a.term_months,
        started_at: to_timestamp_opt(Some(a.started_at)),
        term_ends_at: to_timestamp_opt(Some(a.term_ends_at)),
        renewals: a.renewals,
        churned_at: to_timestamp_opt(a.churned_at),
        churn_reason: a.churn_reason.clone(),
    }
}

const METHOD: &str = "/themodel.customersuccess.v1.CustomerSuccessService/";

impl Api {
    async fn load(&self, tx: &mut Tx, id: &str) -> ApiResult<Account> {
        store::account(&mut **tx, id).await?.ok_or_else(|| ApiError::not_found("account", id))
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.account_id, handover = %req.request_id))]
    async fn accept_won_deal(&self, req: pb::AcceptWonDealRequest) -> ApiResult<pb::Account> {
        let mut v = Violations::new();
        v.request_id(&req.request_id);
        let deal = WonDeal {
            account_id: v.id("account_id", &req.account_id),
            opportunity_id: v.id("opportunity_id", &req.opportunity_id),
            lead_id: v.id("lead_id", &req.lead_id),
            company: v.optional("company", &req.company, 200),
            contact_name: v.optional("contact_name", &req.contact_name, 200),
            contact_email: v.optional("contact_email", &req.contact_email, 254),
            contract_value: Money::parse(&mut v, "contract_value", req.contract_value.as_ref(), true)
                .unwrap_or_default(),
            term_months: req.term_months,
            occurred_at: v.occurred_at("occurred_at", req.occurred_at.as_ref(), &self.clock),
        };
        v.check((1..=120).contains(&req.term_months), "term_months", "must be 1-120");
        v.finish()?;

        let key = Idempotency::new(&format!("{METHOD}AcceptWonDeal"), &req.request_id, &req);
        let mut tx = self.db.begin().await?;
        if let Some(first) = key.replay(&mut tx).await? {
            return Ok(first);
        }
        let now = self.clock.now();
        // A deal for an account that exists is an expansion (or a win-back),
        // never an error: a refused hand-over would be retried forever.
        let (a, kind) = match store::account(&mut *tx, &deal.account_id).await? {
            Some(mut existing) => {
                existing.expand(&deal);
                (existing, "account_expanded")
            }
            None => (Account::open(deal.clone()), "account_opened"),
        };
        store::save(&mut tx, &a).await?;
        let evs = [NewEvent {
            kind,
            subject_id: a.account_id.clone(),
            occurred_at: deal.occurred_at,
            definition_version: 0,
            payload: json!({
                "opportunity_id": deal.opportunity_id, "lead_id": deal.lead_id,
                "currency_code": deal.contract_value.currency_code, "units": deal.contract_value.units,
                "nanos": deal.contract_value.nanos, "term_months": deal.term_months,
            }),
        }];
        let resp = account_to_proto(&a);
        key.commit(tx, &resp, &evs, now).await?;
        Ok(resp)
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.account_id))]
    async fn get_account(&self, req: pb::GetAccountRequest) -> ApiResult<pb::Account> {
        let mut v = Violations::new();
        let id = v.id("account_id", &req.account_id);
        v.finish()?;
        let a = store::account(self.db.reader(), &id).await?.ok_or_else(|| ApiError::not_found("account", &id))?;
        Ok(account_to_proto(&a))
    }

    #[tracing::instrument(skip_all)]
    async fn list_accounts(&self, req: pb::ListAccountsRequest) -> ApiResult<pb::ListAccountsResponse> {
        let mut v = Violations::new();
        let limit = validate::page_size(&mut v, req.page_size, 50, 500);
        let status = match pb::AccountStatus::try_from(req.status) {
            Ok(pb::AccountStatus::Unspecified) => None,
            Ok(pb::AccountStatus::Active) => Some(AccountStatus::Active),
            Ok(pb::AccountStatus::Churned) => Some(AccountStatus::Churned),
            Err(_) => {
                v.add("status", "unknown account status");
                None
            }
        };
        v.finish()?;
        let after = match paging::decode(&req.page_token, 2)? {
            Some(k) => Some((paging::int(&k[0])?, k[1].clone())),
            None => None,
        };
        let mut rows = store::list(&self.db, status, after, limit + 1).await?;
        let next_page_token = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|a| paging::encode(&[&a.started_at.to_string(), &a.account_id])).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListAccountsResponse { accounts: rows.iter().map(account_to_proto).collect(), next_page_token })
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.account_id))]
    async fn record_renewal(&self, req: pb::RecordRenewalRequest) -> ApiResult<pb::Account> {
        let mut v = Violations::new();
        v.request_id(&req.request_id);
        let id = v.id("account_id", &req.account_id);
        let term = match req.term_months {
            0 => None,
            t => {
                v.check((1..=120).contains(&t), "term_months", "must be 1-120 (or 0 to keep the current term)");
                Some(t)
            }
        };
        let value = Money::parse(&mut v, "contract_value", req.contract_value.as_ref(), false);
        let at = v.occurred_at("occurred_at", req.occurred_at.as_ref(), &self.clock);
        v.finish()?;

        let key = Idempotency::new(&format!("{METHOD}RecordRenewal"), &req.request_id, &req);
        let mut tx = self.db.begin().await?;
        if let Some(first) = key.replay(&mut tx).await? {
            return Ok(first);
        }
        let now = self.clock.now();
        let mut a = self.load(&mut tx, &id).await?;
        a.renew(term, value, at)?;
        store::save(&mut tx, &a).await?;
        store::insert_renewal(&mut tx, &ids::new_id("rn"), &id, a.term_months, &a.contract_value, at).await?;
        let evs = [NewEvent {
            kind: "renewal_recorded",
            subject_id: id,
            occurred_at: at,
            definition_version: 0,
            payload: json!({
                "term_months": a.term_months, "currency_code": a.contract_value.currency_code,
                "units": a.contract_value.units, "nanos": a.contract_value.nanos, "renewals": a.renewals,
            }),
        }];
        let resp = account_to_proto(&a);
        key.commit(tx, &resp, &evs, now).await?;
        Ok(resp)
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.account_id))]
    async fn record_churn(&self, req: pb::RecordChurnRequest) -> ApiResult<pb::Account> {
        let mut v = Violations::new();
        v.request_id(&req.request_id);
        let id = v.id("account_id", &req.account_id);
        let reason = v.code("reason", &req.reason);
        let note = v.optional("note", &req.note, 4000);
        let at = v.occurred_at("occurred_at", req.occurred_at.as_ref(), &self.clock);
        v.finish()?;

        let key = Idempotency::new(&format!("{METHOD}RecordChurn"), &req.request_id, &req);
        let mut tx = self.db.begin().await?;
        if let Some(first) = key.replay(&mut tx).await? {
            return Ok(first);
        }
        let now = self.clock.now();
        let mut a = self.load(&mut tx, &id).await?;
        a.churn(&reason, at)?;
        store::save(&mut tx, &a).await?;
        let evs = [NewEvent {
            kind: "churn_recorded",
            subject_id: id,
            occurred_at: at,
            definition_version: 0,
            payload: json!({ "reason": reason, "note": note }),
        }];
        let resp = account_to_proto(&a);
        key.commit(tx, &resp, &evs, now).await?;
        Ok(resp)
    }
}

#[tonic::async_trait]
impl CustomerSuccessService for Api {
    async fn accept_won_deal(
        &self,
        request: Request<pb::AcceptWonDealRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        Ok(Response::new(Api::accept_won_deal(self, request.into_inner()).await?))
    }

    async fn get_account(&self, request: Request<pb::GetAccountRequest>) -> Result<Response<pb::Account>, Status> {
        Ok(Response::new(Api::get_account(self, request.into_inner()).await?))
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        Ok(Response::new(Api::list_accounts(self, request.into_inner()).await?))
    }

    async fn record_renewal(
        &self,
        request: Request<pb::RecordRenewalRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        Ok(Response::new(Api::record_renewal(self, request.into_inner()).await?))
    }

    async fn record_churn(&self, request: Request<pb::RecordChurnRequest>) -> Result<Response<pb::Account>, Status> {
        Ok(Response::new(Api::record_churn(self, request.into_inner()).await?))
    }
}
