//! `themodel.customersuccess.v1.CustomerSuccessService`: each handler parses
//! its request into domain values, hands the writer a unit of work, and maps
//! the outcome. Reads of one account go through a batched reader.

use themodel_proto::customersuccess::v1 as pb;
use themodel_proto::customersuccess::v1::customer_success_service_server::CustomerSuccessService;
use themodel_runtime::loader::Loader;
use themodel_runtime::owners::{self, Roster};
use themodel_runtime::time::to_timestamp_opt;
use themodel_runtime::validate::{self, Violations};
use themodel_runtime::{ApiError, ApiResult, Call, Clock, Ctx, Done, Need, Writer, paging, wire};
use themodel_values::{AccountId, Code, LeadId, OpportunityId, OwnerId, Term};
use tonic::{Request, Response, Status};

use crate::domain::{Account, Refused, Status as AccountStatus, WonDeal};
use crate::store::{self, Change, CustomerSuccess, Key, RenewalRow};

/// The customer-success service's handlers.
#[derive(Debug, Clone)]
pub struct Api {
    pub writer: Writer<CustomerSuccess>,
    pub accounts: Loader<AccountId, Account>,
    pub clock: Clock,
    /// The customer success managers new accounts are given to in turn.
    pub owners: Roster,
}

const METHOD: &str = "/themodel.customersuccess.v1.CustomerSuccessService/";

impl From<Refused> for ApiError {
    fn from(r: Refused) -> ApiError {
        match &r {
            Refused::Churned(id) => ApiError::precondition("STATE", format!("accounts/{id}"), r.to_string()),
            Refused::Money { account, .. } | Refused::RenewalCurrency { account, .. } => {
                ApiError::precondition("CONTRACT_VALUE", format!("accounts/{account}"), r.to_string())
            }
            Refused::TermPastEnd(_) => ApiError::precondition("TERM", "term_months", r.to_string()),
        }
    }
}

pub fn account_to_proto(a: &Account) -> pb::Account {
    let (owner_id, team) = owners::fields(a.owner.as_ref());
    pb::Account {
        account_id: a.account_id.to_string(),
        opportunity_id: a.opportunity_id.to_string(),
        lead_id: a.lead_id.to_string(),
        company: a.company.clone(),
        contact_name: a.contact_name.clone(),
        contact_email: a.contact_email.clone(),
        status: match a.status {
            AccountStatus::Active => pb::AccountStatus::Active,
            AccountStatus::Churned => pb::AccountStatus::Churned,
        } as i32,
        contract_value: Some(wire::money_to_proto(&a.contract_value)),
        term_months: a.term.months_i32(),
        started_at: to_timestamp_opt(Some(a.started_at)),
        term_ends_at: to_timestamp_opt(Some(a.term_ends_at)),
        renewals: a.renewals,
        churned_at: to_timestamp_opt(a.churned_at),
        churn_reason: a.churn_reason.clone(),
        expansions: a.expansions,
        owner_id,
        team,
        erased_at: to_timestamp_opt(a.erased_at),
    }
}

fn account_id(v: &mut Violations, s: &str) -> Option<AccountId> {
    v.parse("account_id", AccountId::parse(s))
}

/// The account a unit works on, copied to change.
fn account(cx: &Ctx<'_, CustomerSuccess>, id: &AccountId) -> ApiResult<Account> {
    cx.state.account(id)?.cloned().ok_or_else(|| ApiError::not_found("account", id.as_str()))
}

impl Api {
    #[tracing::instrument(skip_all, fields(account_id = %request.get_ref().account_id, handover = %request.get_ref().request_id))]
    async fn erase_person(&self, request: Request<pb::ErasePersonRequest>) -> ApiResult<pb::ErasePersonResponse> {
        let call = Call::new(&request, &format!("{METHOD}ErasePerson"), &request.get_ref().request_id)?
            .about(&request.get_ref().account_id);
        let r = request.get_ref();
        let mut v = Violations::new();
        let id = account_id(&mut v, &r.account_id);
        let lead_id = v.parse("lead_id", LeadId::parse(&r.lead_id));
        let (id, lead_id) = v.build(|| Some((id?, lead_id?)))?;
        self.writer
            .execute(call, vec![Need::Row(Key::Account(id.clone()))], move |cx| {
                let Some(a) = cx.state.account(&id)? else {
                    return Ok(Done::new(&pb::ErasePersonResponse { erased: false }));
                };
                let mut a = a.clone();
                if !a.erase(&lead_id, cx.now) {
                    return Ok(Done::new(&pb::ErasePersonResponse { erased: false }));
                }
                Ok(Done::new(&pb::ErasePersonResponse { erased: true })
                    .change(Change::Account(Box::new(a)))
                    .erased([id.to_string()]))
            })
            .await
    }

    #[tracing::instrument(skip_all, fields(account_id = %request.get_ref().account_id, handover = %request.get_ref().request_id))]
    async fn accept_won_deal(
        &self,
        request: Request<pb::AcceptWonDealRequest>,
    ) -> ApiResult<pb::AcceptWonDealResponse> {
        let call = Call::new(&request, &format!("{METHOD}AcceptWonDeal"), &request.get_ref().request_id)?
            .about(&request.get_ref().account_id);
        let r = request.get_ref();
        let mut v = Violations::new();
        let id = account_id(&mut v, &r.account_id);
        let opportunity_id = v.parse("opportunity_id", OpportunityId::parse(&r.opportunity_id));
        let lead_id = v.parse("lead_id", LeadId::parse(&r.lead_id));
        let value = wire::required_money(&mut v, "contract_value", r.contract_value.as_ref());
        let term = v.parse("term_months", Term::parse(r.term_months));
        let company = v.text("company", &r.company, 200);
        let contact_name = v.text("contact_name", &r.contact_name, 200);
        let contact_email = v.text("contact_email", &r.contact_email, 254);
        let occurred_at = v.occurred_at("occurred_at", r.occurred_at.as_ref(), &self.clock);
        let deal = v.build(|| {
            Some(WonDeal {
                account_id: id?,
                opportunity_id: opportunity_id?,
                lead_id: lead_id?,
                company,
                contact_name,
                contact_email,
                contract_value: value?,
                term: term?,
                occurred_at,
            })
        })?;
        let handover_id = r.request_id.clone();
        let needs = vec![Need::Row(Key::Account(deal.account_id.clone())), Need::Row(Key::Turn)];
        let roster = self.owners.clone();
        self.writer
            .execute(call, needs, move |cx| {
                let existing = cx.state.account(&deal.account_id)?;
                // The deal the account holds already, handed over again, is
                // acknowledged without effect: it never counts twice.
                if let Some(a) = existing.filter(|a| a.opportunity_id == deal.opportunity_id) {
                    return Ok(Done::new(&pb::AcceptWonDealResponse { account: Some(account_to_proto(a)) }));
                }
                // The account's manager stays while on the roster; a new
                // account (or one whose manager left) gets the next in turn.
                let kept = existing.and_then(|a| a.kept_owner(&roster));
                let (owner, turn) = owners::kept_or_next(kept, cx.state.turns(), store::ROUND_ROBIN, &roster)?;
                // A deal for an account that exists expands it (or wins it back).
                let (a, out) = match existing {
                    Some(existing) => {
                        let mut a = existing.clone();
                        let out = a.expand(&deal, &handover_id, owner)?;
                        (a, out)
                    }
                    None => Account::open(deal.clone(), &handover_id, owner)?,
                };
                let resp = pb::AcceptWonDealResponse { account: Some(account_to_proto(&a)) };
                Ok(Done::new(&resp).change(Change::Account(Box::new(a))).changes(turn.map(Change::Turn)).effects(out))
            })
            .await
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.account_id))]
    async fn get_account(&self, req: pb::GetAccountRequest) -> ApiResult<pb::GetAccountResponse> {
        let id = AccountId::parse(&req.account_id).map_err(|e| ApiError::field("account_id", e.0))?;
        let a = self.accounts.get(id.clone()).await?.ok_or_else(|| ApiError::not_found("account", id.as_str()))?;
        Ok(pb::GetAccountResponse { account: Some(account_to_proto(&a)) })
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
                v.add("status", "must be ACCOUNT_STATUS_ACTIVE or ACCOUNT_STATUS_CHURNED (unset: all)");
                None
            }
        };
        let owner = match req.owner_id.as_str() {
            "" => None,
            id => v.parse("owner_id", OwnerId::parse(id)),
        };
        v.finish()?;
        let after = match paging::decode(&req.page_token, 2)? {
            Some(k) => Some((paging::int(&k[0])?, k[1].clone())),
            None => None,
        };
        let mut rows =
            store::list(self.writer.db(), status, owner.as_ref().map(OwnerId::as_str), after, limit + 1).await?;
        let next_page_token = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|a| paging::encode(&[&a.started_at.to_string(), a.account_id.as_str()])).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListAccountsResponse { accounts: rows.iter().map(account_to_proto).collect(), next_page_token })
    }

    #[tracing::instrument(skip_all, fields(account_id = %request.get_ref().account_id))]
    async fn record_renewal(&self, request: Request<pb::RecordRenewalRequest>) -> ApiResult<pb::RecordRenewalResponse> {
        let call = Call::new(&request, &format!("{METHOD}RecordRenewal"), &request.get_ref().request_id)?
            .about(&request.get_ref().account_id);
        let r = request.get_ref();
        let mut v = Violations::new();
        let id = account_id(&mut v, &r.account_id);
        let term = match r.term_months {
            0 => Some(None),
            t => v
                .parse(
                    "term_months",
                    Term::parse(t).map_err(|_| {
                        themodel_values::Invalid::new("must be 1-120 months, or 0 to keep the current term")
                    }),
                )
                .map(Some),
        };
        let value = wire::money(&mut v, "contract_value", r.contract_value.as_ref());
        let at = v.occurred_at("occurred_at", r.occurred_at.as_ref(), &self.clock);
        let (id, term) = v.build(|| Some((id?, term?)))?;
        let needs = vec![Need::Row(Key::Account(id.clone()))];
        self.writer
            .execute(call, needs, move |cx| {
                let mut a = account(cx, &id)?;
                let out = a.renew(term, value, at)?;
                let resp = pb::RecordRenewalResponse { account: Some(account_to_proto(&a)) };
                let row = RenewalRow {
                    renewal_id: themodel_values::new_id("rn"),
                    account_id: id.clone(),
                    term: a.term,
                    value: a.contract_value,
                    at,
                };
                Ok(Done::new(&resp).change(Change::Account(Box::new(a))).change(Change::Renewal(row)).effects(out))
            })
            .await
    }

    #[tracing::instrument(skip_all, fields(account_id = %request.get_ref().account_id))]
    async fn record_churn(&self, request: Request<pb::RecordChurnRequest>) -> ApiResult<pb::RecordChurnResponse> {
        let call = Call::new(&request, &format!("{METHOD}RecordChurn"), &request.get_ref().request_id)?
            .about(&request.get_ref().account_id);
        let r = request.get_ref();
        let mut v = Violations::new();
        let id = account_id(&mut v, &r.account_id);
        let reason = v.parse("reason", Code::parse(&r.reason));
        v.text("note", &r.note, 4000);
        let at = v.occurred_at("occurred_at", r.occurred_at.as_ref(), &self.clock);
        let (id, reason) = v.build(|| Some((id?, reason?)))?;
        let needs = vec![Need::Row(Key::Account(id.clone()))];
        self.writer
            .execute(call, needs, move |cx| {
                let mut a = account(cx, &id)?;
                let out = a.churn(&reason, at)?;
                let resp = pb::RecordChurnResponse { account: Some(account_to_proto(&a)) };
                Ok(Done::new(&resp).change(Change::Account(Box::new(a))).effects(out))
            })
            .await
    }

    #[tracing::instrument(skip_all, fields(account_id = %request.get_ref().account_id, owner = %request.get_ref().owner_id))]
    async fn assign_account(&self, request: Request<pb::AssignAccountRequest>) -> ApiResult<pb::AssignAccountResponse> {
        let call = Call::new(&request, &format!("{METHOD}AssignAccount"), &request.get_ref().request_id)?
            .about(&request.get_ref().account_id);
        let r = request.get_ref();
        let mut v = Violations::new();
        let id = account_id(&mut v, &r.account_id);
        let owner = v.parse("owner_id", self.owners.owner(&r.owner_id));
        let at = v.occurred_at("occurred_at", r.occurred_at.as_ref(), &self.clock);
        let (id, owner) = v.build(|| Some((id?, owner?)))?;
        let needs = vec![Need::Row(Key::Account(id.clone()))];
        self.writer
            .execute(call, needs, move |cx| {
                let mut a = account(cx, &id)?;
                let out = a.assign(owner.clone(), at)?;
                let resp = pb::AssignAccountResponse { account: Some(account_to_proto(&a)) };
                Ok(Done::new(&resp).change(Change::Account(Box::new(a))).effects(out))
            })
            .await
    }
}

#[tonic::async_trait]
impl CustomerSuccessService for Api {
    async fn accept_won_deal(
        &self,
        request: Request<pb::AcceptWonDealRequest>,
    ) -> Result<Response<pb::AcceptWonDealResponse>, Status> {
        Ok(Response::new(Api::accept_won_deal(self, request).await?))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
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
    ) -> Result<Response<pb::RecordRenewalResponse>, Status> {
        Ok(Response::new(Api::record_renewal(self, request).await?))
    }

    async fn record_churn(
        &self,
        request: Request<pb::RecordChurnRequest>,
    ) -> Result<Response<pb::RecordChurnResponse>, Status> {
        Ok(Response::new(Api::record_churn(self, request).await?))
    }

    async fn assign_account(
        &self,
        request: Request<pb::AssignAccountRequest>,
    ) -> Result<Response<pb::AssignAccountResponse>, Status> {
        Ok(Response::new(Api::assign_account(self, request).await?))
    }

    async fn erase_person(
        &self,
        request: Request<pb::ErasePersonRequest>,
    ) -> Result<Response<pb::ErasePersonResponse>, Status> {
        Ok(Response::new(Api::erase_person(self, request).await?))
    }
}
