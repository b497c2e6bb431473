//! The OpenAPI 3.1 document served at `/v1/openapi.json` and committed as
//! `docs/openapi.json` (a test fails when the two differ), and the Prometheus rendering of the
//! engine's metrics served at `/metrics`.

use engine::{HISTOGRAM_BOUNDS, Histogram, MetricsSnapshot};
use serde_json::{Value, json};

use crate::error::ErrorCode;
use crate::{BULK_PAYMENTS_MAX, IDEMPOTENCY_KEY_LEN_MAX, PAGE_LIMIT_MAX};

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

fn response(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": json_content(schema) })
}

fn error_response() -> Value {
    response(
        "An error from the catalog (see the Error schema for codes).",
        schema_ref("Error"),
    )
}

fn page_of(item: &str) -> Value {
    json!({
        "type": "object",
        "required": ["data", "next_cursor"],
        "properties": {
            "data": { "type": "array", "items": schema_ref(item) },
            "next_cursor": { "type": ["string", "null"], "description": "Pass as `cursor` for the next page; null on the last page." }
        }
    })
}

fn query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string" } })
}

fn idempotency_header() -> Value {
    json!({
        "name": "Idempotency-Key", "in": "header", "required": false,
        "description": "Same key and body: the first response again (with header Idempotent-Replayed: true). Same key, other body: 409 idempotency_key_reused. Keys are scoped to the API key.",
        "schema": { "type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_LEN_MAX }
    })
}

fn post(summary: &str, scope: &str, body: &str, ok: Value, extra: &[(&str, Value)]) -> Value {
    let mut responses = serde_json::Map::new();
    for (status, value) in extra {
        responses.insert((*status).to_owned(), value.clone());
    }
    for (status, value) in ok.as_object().into_iter().flatten() {
        responses.insert(status.clone(), value.clone());
    }
    responses.insert("default".into(), error_response());
    json!({
        "summary": summary,
        "description": format!("Needs scope `{scope}`."),
        "security": [{ "bearer": [] }],
        "parameters": [idempotency_header()],
        "requestBody": { "required": true, "content": json_content(schema_ref(body)) },
        "responses": responses,
    })
}

/// An operation of the signed-in merchant app.
fn merchant_op(summary: &str) -> Value {
    merchant_op_answering(summary, "200", "OK.")
}

/// A merchant-app operation whose success is `status` (201 created, 202 waiting for approval).
fn merchant_op_answering(summary: &str, status: &str, meaning: &str) -> Value {
    json!({
        "summary": summary,
        "security": [{ "dpop": [] }],
        "responses": { status: response(meaning, json!({ "type": "object" })), "default": error_response() },
    })
}

fn get_op(summary: &str, parameters: Vec<Value>, ok: Value) -> Value {
    json!({
        "summary": summary,
        "description": "Needs scope `read`.",
        "security": [{ "bearer": [] }],
        "parameters": parameters,
        "responses": { "200": ok, "default": error_response() },
    })
}

fn amount(description: &str) -> Value {
    json!({ "type": "integer", "format": "int64", "description": description })
}

fn timestamp(description: &str) -> Value {
    json!({ "type": "string", "format": "date-time", "description": description })
}

fn fee_schedule() -> Value {
    json!({
        "type": "object",
        "required": ["rate_ppm"],
        "additionalProperties": false,
        "description": "fee = clamp(round_half_up(amount × rate_ppm / 1,000,000), min, max); max 0 means no maximum.",
        "properties": {
            "rate_ppm": { "type": "integer", "minimum": 0, "maximum": 1_000_000, "description": "Rate in parts per million (3800 = 0.38%)." },
            "min": amount("Minimum fee in minor units (default 0)."),
            "max": amount("Maximum fee in minor units (default 0: none).")
        }
    })
}

fn schemas() -> Value {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
    json!({
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": { "error": {
                "type": "object", "required": ["code", "message"],
                "properties": {
                    "code": { "type": "string", "enum": codes },
                    "message": { "type": "string" }
                }
            }}
        },
        "FeeSchedule": fee_schedule(),
        "CreateChannel": {
            "type": "object", "additionalProperties": false,
            "required": ["id", "name", "currency", "cost"],
            "properties": {
                "id": { "type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$" },
                "name": { "type": "string", "minLength": 1, "maxLength": 128 },
                "currency": { "type": "string", "pattern": "^[A-Z]{3}$" },
                "cost": schema_ref("FeeSchedule"),
                "settlement_cycle": { "type": "string", "enum": ["T1", "D1", "T0", "D0"], "description": "When the channel pays the platform (default T1)." },
                "payout_cost": amount("What the channel charges the platform per payout it carries (default 0).")
            }
        },
        "Channel": {
            "type": "object",
            "required": ["id", "name", "currency", "cost", "receivable_account_id", "created_at"],
            "properties": {
                "id": { "type": "string" }, "name": { "type": "string" },
                "currency": { "type": "string" }, "cost": schema_ref("FeeSchedule"),
                "settlement_cycle": { "type": "string", "enum": ["T1", "D1", "T0", "D0"] },
                "payout_cost": amount("Per payout."),
                "receivable_account_id": { "type": "integer", "format": "int64" },
                "created_at": timestamp("When it was created.")
            }
        },
        "CreateMerchant": {
            "type": "object", "additionalProperties": false,
            "required": ["id", "name", "currency", "fee"],
            "description": "A merchant with its first terms (the fields of Terms except effective_from).",
            "properties": {
                "id": { "type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$" },
                "name": { "type": "string", "minLength": 1, "maxLength": 128 },
                "currency": { "type": "string", "pattern": "^[A-Z]{3}$" },
                "fee": schema_ref("FeeSchedule"),
                "allow_below_cost": { "type": "boolean" },
                "settlement": { "$ref": "#/components/schemas/Terms/properties/settlement" },
                "advance": { "$ref": "#/components/schemas/Terms/properties/advance" },
                "reserve_ratio_ppm": { "type": "integer" },
                "bank_account": { "$ref": "#/components/schemas/Terms/properties/bank_account" },
                "calendar": { "type": "string" },
                "refund_fee_returned": { "type": "boolean" },
                "refund_queue": { "type": "boolean" }
            }
        },
        "Merchant": {
            "type": "object",
            "required": ["id", "name", "currency", "fee", "account_ids", "created_at"],
            "properties": {
                "id": { "type": "string" }, "name": { "type": "string" },
                "currency": { "type": "string" }, "fee": schema_ref("FeeSchedule"),
                "terms": schema_ref("Terms"),
                "terms_versions": { "type": "integer" },
                "account_ids": {
                    "type": "object",
                    "properties": {
                        "pending": { "type": "integer" }, "available": { "type": "integer" },
                        "frozen": { "type": "integer" }, "advanced": { "type": "integer" },
                        "debt": { "type": "integer" }
                    }
                },
                "created_at": timestamp("When it was created.")
            }
        },
        "Balances": {
            "type": "object",
            "required": ["merchant_id", "currency", "pending", "available", "frozen", "advanced", "debt"],
            "properties": {
                "merchant_id": { "type": "string" }, "currency": { "type": "string" },
                "pending": amount("Claims not yet funded by the channel."),
                "available": amount("Funded claims not yet paid out."),
                "frozen": amount("Claims held by risk holds or the reserve."),
                "advanced": amount("Paid out ahead of funding."),
                "debt": amount("Owed to the platform after reversals."),
                "advance_available": amount("The largest advance possible now; its fees come on top, from the claims.")
            }
        },
        "CreatePayment": {
            "type": "object", "additionalProperties": false,
            "required": ["channel_id", "merchant_id", "channel_trade_no", "merchant_order_no", "amount", "currency", "paid_at"],
            "properties": {
                "channel_id": { "type": "string" }, "merchant_id": { "type": "string" },
                "channel_trade_no": { "type": "string", "description": "Unique per channel; a repeat with equal content returns the same payment (200), with other content 409 trade_no_conflict." },
                "merchant_order_no": { "type": "string" },
                "amount": amount("Gross amount in minor units, > 0."),
                "currency": { "type": "string" },
                "paid_at": timestamp("When the channel says the customer paid."),
                "store_id": { "type": ["string", "null"], "description": "The merchant's store (shop, branch) it was taken at, if any; operators may be limited to some stores." }
            }
        },
        "CreatePayments": {
            "type": "object", "additionalProperties": false, "required": ["payments"],
            "properties": { "payments": { "type": "array", "minItems": 1, "maxItems": BULK_PAYMENTS_MAX, "items": schema_ref("CreatePayment") } }
        },
        "BulkResults": {
            "type": "object", "required": ["results"],
            "properties": { "results": { "type": "array", "items": {
                "type": "object", "required": ["status"],
                "description": "One per submitted pay-in, in order: `payment` when status is 200 or 201, `error` otherwise.",
                "properties": {
                    "status": { "type": "integer" },
                    "payment": schema_ref("Payment"),
                    "error": { "type": "object", "properties": { "code": { "type": "string" }, "message": { "type": "string" } } }
                }
            }}}
        },
        "Payment": {
            "type": "object",
            "required": ["id", "channel_id", "merchant_id", "channel_trade_no", "merchant_order_no", "amount", "currency", "paid_at", "merchant_fee", "channel_cost", "merchant_claim", "created_at"],
            "properties": {
                "id": { "type": "string", "example": "pay_1" },
                "channel_id": { "type": "string" }, "merchant_id": { "type": "string" },
                "channel_trade_no": { "type": "string" }, "merchant_order_no": { "type": "string" },
                "amount": amount("Gross amount."), "currency": { "type": "string" },
                "paid_at": timestamp("When the customer paid."),
                "merchant_fee": amount("What the platform charged the merchant."),
                "channel_cost": amount("What the channel charges the platform."),
                "merchant_claim": amount("amount − merchant_fee: what the platform owes the merchant."),
                "refunded": amount("Refunded and reversed so far (GET of one payment only)."),
                "created_at": timestamp("When the platform recorded it."),
                "store_id": { "type": ["string", "null"] }
            }
        },
        "Account": {
            "type": "object",
            "properties": {
                "id": { "type": "integer" }, "currency": { "type": "string" },
                "kind": { "type": "string", "enum": ["asset", "liability", "income", "expense", "equity"] },
                "flags": { "type": "array", "items": { "type": "string", "enum": ["debits_must_not_exceed_credits", "credits_must_not_exceed_debits"] } },
                "credit_limit": amount("Overdraft allowed beyond the limit flag."),
                "code": { "type": "integer" }, "user_data": { "type": "integer" },
                "debits_pending": amount(""), "debits_posted": amount(""),
                "credits_pending": amount(""), "credits_posted": amount(""),
                "balance": amount("Posted balance on the account's normal side."),
                "created_at": timestamp(""),
                "last_seq": { "type": "integer", "description": "Newest journal entry of this account." }
            }
        },
        "Transfer": {
            "type": "object",
            "properties": {
                "seq": { "type": "integer" }, "id": { "type": "string", "description": "32 hex digits." },
                "debit_account_id": { "type": "integer" }, "credit_account_id": { "type": "integer" },
                "amount": amount(""), "pending_id": { "type": "string" },
                "flags": { "type": "array", "items": { "type": "string" } },
                "code": { "type": "integer" }, "user_data": { "type": "integer" },
                "timestamp": timestamp("")
            }
        },
        "TrialBalance": {
            "type": "object", "required": ["currencies", "balanced"],
            "properties": {
                "currencies": { "type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "currency": { "type": "string" },
                        "debits_posted": { "type": "integer" }, "credits_posted": { "type": "integer" },
                        "debits_pending": { "type": "integer" }, "credits_pending": { "type": "integer" },
                        "balanced": { "type": "boolean" }
                    }
                }},
                "balanced": { "type": "boolean" }
            }
        },
        "Terms": {
            "type": "object", "additionalProperties": false, "required": ["fee"],
            "description": "Merchant terms. POST /v1/merchants takes the same fields beside id, name and currency.",
            "properties": {
                "fee": schema_ref("FeeSchedule"),
                "allow_below_cost": { "type": "boolean", "description": "Allow a fee below the channel's cost (floor price); such pay-ins are counted on their lots." },
                "settlement": { "type": "object", "additionalProperties": false, "properties": {
                    "cycle": { "type": "string", "enum": ["T1", "D1", "T0", "D0"], "description": "Default T1." },
                    "cutoff": { "type": "string", "example": "01:00", "description": "End of the business day, Asia/Shanghai (default 01:00)." },
                    "run_at": { "type": "array", "items": { "type": "string", "example": "05:00" }, "description": "Settlement run times (default [05:00])." },
                    "settle_before_funds": { "type": "boolean", "description": "May a run pay unfunded due lots (as an advance)? Default false." },
                    "payout_fee": amount("Fixed fee per settlement or withdrawal payout.")
                }},
                "advance": { "type": "object", "additionalProperties": false, "properties": {
                    "enabled": { "type": "boolean" },
                    "rate_ppm": { "type": "integer" },
                    "rate_ppm_per_day": { "type": "integer", "description": "Added per natural day until the channel's money is expected." },
                    "fixed_fee": amount("Per advance payout."),
                    "max_ratio_ppm": { "type": "integer", "description": "Largest share of unfunded claims that may be drawn (0: all)." },
                    "limit_per_payout": amount("0: none."),
                    "limit_daily": amount("Claims drawn per local day (0: none)."),
                    "limit_outstanding": amount("Claims drawn and not yet funded (0: none)."),
                    "allow_below_cost_of_funds": { "type": "boolean" }
                }},
                "reserve_ratio_ppm": { "type": "integer", "description": "Share of funded claims held as reserve (a hold named reserve-lot-N); reversals use it before creating debt." },
                "bank_account": { "type": "object", "properties": { "holder": { "type": "string" }, "number": { "type": "string" }, "bank": { "type": "string" } } },
                "calendar": { "type": "string", "description": "Business calendar for T cycles (default cn)." },
                "refund_fee_returned": { "type": "boolean", "description": "Refunds give back the matching share of the merchant fee (default false)." },
                "refund_queue": { "type": "boolean", "description": "A refund the claims cannot cover waits (status queued) for later claims instead of being refused (default false)." },
                "effective_from": timestamp("When this version takes effect (default now).")
            }
        },
        "Lot": {
            "type": "object",
            "properties": {
                "id": { "type": "integer" }, "channel_id": { "type": "string" },
                "business_date": { "type": "string", "format": "date" },
                "cycle": { "type": "string" },
                "state": { "type": "string", "enum": ["open", "sealed", "funded"] },
                "claims": amount(""), "expected_from_channel": amount(""), "drawn": amount("By advances, before funding."),
                "paid": amount("After funding."), "remaining": amount(""), "below_floor_payins": { "type": "integer" },
                "funded_at": { "type": ["string", "null"] }
            }
        },
        "CalendarYear": {
            "type": "object", "additionalProperties": false, "required": ["holidays", "workdays", "source"],
            "properties": {
                "holidays": { "type": "array", "items": { "type": "string", "format": "date" } },
                "workdays": { "type": "array", "items": { "type": "string", "format": "date" }, "description": "Weekend days that are working days (调休)." },
                "source": { "type": "string" }
            }
        },
        "CreateFunder": {
            "type": "object", "additionalProperties": false, "required": ["id", "name", "kind", "line", "limit"],
            "properties": {
                "id": { "type": "string" }, "name": { "type": "string" },
                "kind": { "type": "string", "enum": ["position", "credit_line"] },
                "line": { "type": "string", "enum": ["intraday", "overnight"], "description": "An intraday line funds only advances whose money is expected the same day." },
                "limit": amount("Most claims it funds at once."),
                "reset_at": { "type": "string", "example": "00:00" },
                "cost_rate_ppm_per_day": { "type": "integer" },
                "priority": { "type": "integer", "description": "Lower goes first (default 100)." }
            }
        },
        "Funder": { "type": "object", "properties": {
            "id": { "type": "string" }, "name": { "type": "string" }, "kind": { "type": "string" }, "line": { "type": "string" },
            "limit": amount(""), "used": amount(""), "available": amount(""), "reset_at": { "type": "string" },
            "cost_rate_ppm_per_day": { "type": "integer" }, "priority": { "type": "integer" }, "created_at": timestamp("")
        }},
        "CreatePayout": {
            "type": "object", "additionalProperties": false, "required": ["merchant_id", "amount", "kind"],
            "properties": {
                "merchant_id": { "type": "string" },
                "amount": amount("What reaches the bank account; fees come on top, from the claims."),
                "kind": { "type": "string", "enum": ["withdrawal", "advance"] },
                "request_id": { "type": "string", "description": "Makes retries return the first payout (default: the Idempotency-Key)." }
            }
        },
        "Payout": { "type": "object", "properties": {
            "id": { "type": "string", "example": "po_1" }, "request_id": { "type": ["string", "null"] },
            "merchant_id": { "type": "string" }, "kind": { "type": "string", "enum": ["withdrawal", "advance", "settlement"] },
            "amount": amount("What reaches the bank account."), "fee": amount("Every fee it bore."),
            "status": { "type": "string", "enum": ["created", "sent", "succeeded", "failed", "unknown"] },
            "funded": { "type": "boolean" }, "funder_id": { "type": ["string", "null"] }, "days_to_funds": { "type": "integer" },
            "bank_account": { "type": "object" }, "draws": { "type": "array", "items": { "type": "object" } },
            "created_at": timestamp(""), "updated_at": timestamp("")
        }},
        "ResolvePayout": { "type": "object", "additionalProperties": false, "required": ["result"], "properties": { "result": { "type": "string", "enum": ["succeeded", "failed", "unknown"] } } },
        "CreateChannelSettlement": {
            "type": "object", "additionalProperties": false, "required": ["channel_id", "business_date", "amount", "bank_reference"],
            "properties": {
                "channel_id": { "type": "string" }, "business_date": { "type": "string", "format": "date" },
                "amount": amount("What arrived."), "bank_reference": { "type": "string" },
                "reversals": { "type": "array", "items": schema_ref("CreateReversal"), "description": "Payments the channel did not pay for: applied as reversals first, so their shortfall is the merchant's; only an unexplained difference stays a discrepancy." }
            }
        },
        "ChannelSettlement": { "type": "object", "properties": {
            "id": { "type": "integer" }, "channel_id": { "type": "string" }, "business_date": { "type": "string" },
            "amount": amount(""), "expected": amount(""), "discrepancy": amount("amount − expected."),
            "bank_reference": { "type": "string" }, "lots": { "type": "integer" }, "created_at": timestamp("")
        }},
        "CreateRefund": { "type": "object", "additionalProperties": false, "required": ["payment_id", "amount"], "properties": {
            "payment_id": { "type": "string" }, "amount": amount("Gross amount returned to the customer."),
            "request_id": { "type": "string", "description": "Makes retries return the first refund (default: the Idempotency-Key)." }
        }},
        "CreateReversal": { "type": "object", "additionalProperties": false, "required": ["payment_id", "amount", "reference"], "properties": {
            "payment_id": { "type": "string" }, "amount": amount(""), "reference": { "type": "string", "description": "The channel's reference." }
        }},
        "Refund": { "type": "object", "properties": {
            "id": { "type": "string" }, "kind": { "type": "string", "enum": ["refund", "reversal"] }, "request_id": { "type": "string" },
            "payment_id": { "type": "string" }, "merchant_id": { "type": "string" }, "amount": amount(""),
            "fee_returned": amount("Share of the merchant fee given back (by the terms' refund_fee_returned)."),
            "from_claims": amount("Taken from the merchant's free claims."), "from_reserve": amount("Taken from its reserve (reversals)."), "debt": amount("Not covered: the merchant's new debt (reversals)."),
            "status": { "type": "string", "enum": ["done", "queued"] },
            "created_at": timestamp("")
        }},
        "CreateHold": { "type": "object", "additionalProperties": false, "required": ["amount", "reason"], "properties": {
            "hold_id": { "type": "string" }, "amount": amount(""), "reason": { "type": "string" }
        }},
        "Hold": { "type": "object", "properties": {
            "id": { "type": "string" }, "merchant_id": { "type": "string" }, "amount": amount(""), "reason": { "type": "string" },
            "active": { "type": "boolean" }, "created_at": timestamp(""), "released_at": { "type": ["string", "null"] }
        }},
        "SetFrozen": { "type": "object", "additionalProperties": false, "required": ["frozen"], "properties": { "frozen": { "type": "boolean" } } },
        "ExposureLimit": { "type": "object", "additionalProperties": false, "required": ["limit"], "properties": { "limit": amount("0: none beyond the funders' own.") } },
        "CreateMaster": { "type": "object", "additionalProperties": false, "required": ["username", "password"], "properties": {
            "user_id": { "type": "string", "description": "Default: <merchant>.<username>." },
            "username": { "type": "string" },
            "password": { "type": "string", "minLength": 10, "maxLength": 128, "writeOnly": true }
        }},
        "MerchantUser": { "type": "object", "properties": {
            "id": { "type": "string" }, "merchant_id": { "type": "string" }, "username": { "type": "string" },
            "role": { "type": "string", "enum": ["master", "operator"] },
            "permissions": { "type": "array", "items": { "type": "string", "enum": ["view", "refund", "approve", "payout", "manage_bank_account", "manage_users", "manage_devices"] } },
            "refund_cap_single": amount(""), "refund_cap_daily": amount(""), "disabled": { "type": "boolean" },
            "created_by": { "type": ["string", "null"] }, "created_at": timestamp("")
        }},
        "AdvanceClock": { "type": "object", "additionalProperties": false, "required": ["to"], "properties": { "to": timestamp("The new time.") } },
        "CreateApiKey": {
            "type": "object", "additionalProperties": false, "required": ["scopes"],
            "properties": { "scopes": { "type": "array", "minItems": 1, "items": { "type": "string", "enum": ["admin", "channels:write", "merchants:write", "payments:write", "payouts:write", "refunds:write", "settlements:write", "read"] } } }
        },
        "ApiKey": {
            "type": "object",
            "properties": {
                "id": { "type": "string" },
                "key": { "type": "string", "description": "The secret, shown only here." },
                "scopes": { "type": "array", "items": { "type": "string" } },
                "created_at": timestamp("")
            }
        }
    })
}

fn report_format() -> Value {
    query_param(
        "format",
        "json (default) or csv.",
        json!({ "type": "string", "enum": ["json", "csv"] }),
    )
}

fn report_response() -> Value {
    json!({
        "description": "JSON {columns, rows, …} or text/csv with the same columns.",
        "content": {
            "application/json": { "schema": { "type": "object", "properties": { "columns": { "type": "array", "items": { "type": "string" } }, "rows": { "type": "array", "items": { "type": "object" } } } } },
            "text/csv": { "schema": { "type": "string" } }
        }
    })
}

/// The OpenAPI document of the API.
pub fn document() -> Value {
    let list = |item: &str| response("A page, newest or oldest first as stated.", page_of(item));
    let cursor = || {
        query_param(
            "cursor",
            "From `next_cursor` of the previous page.",
            json!({ "type": "string" }),
        )
    };
    let limit = || {
        query_param(
            "limit",
            "Items per page (default 50).",
            json!({ "type": "integer", "minimum": 1, "maximum": PAGE_LIMIT_MAX }),
        )
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "dzero API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Payment-platform core: channels, merchants, pay-ins and the double-entry ledger. Amounts are integers in minor units (fen for CNY). Every POST accepts Idempotency-Key. Errors share one catalog with stable codes."
        },
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "A platform API key, dzk_…" },
                "dpop": { "type": "http", "scheme": "DPoP", "description": "A merchant user's access token (`Authorization: DPoP dza…`) with a `DPoP` header: an ES256 proof (RFC 9449) for this method and URL, signed by the device key the token is bound to, carrying the token's hash, a fresh jti and the server's nonce (every response carries the current one in its DPoP-Nonce header; a proof without it answers use_dpop_nonce)." }
            },
            "schemas": schemas()
        },
        "paths": {
            "/healthz": { "get": { "summary": "Liveness: 200 while the engine accepts work, 503 after it stopped.", "responses": { "200": { "description": "ok" }, "503": error_response() } } },
            "/metrics": { "get": { "summary": "Prometheus metrics: batch sizes, commit latency, queue depth.", "responses": { "200": { "description": "text/plain exposition format" } } } },
            "/v1/openapi.json": { "get": { "summary": "This document.", "responses": { "200": { "description": "OpenAPI 3.1" } } } },
            "/v1/api-keys": { "post": post("Create an API key with scopes.", "admin", "CreateApiKey", json!({ "201": response("Created; the secret is shown once.", schema_ref("ApiKey")) }), &[]) },
            "/v1/channels": {
                "post": post("Create a channel (idempotent on id and content).", "channels:write", "CreateChannel",
                    json!({ "201": response("Created.", schema_ref("Channel")), "200": response("Already existed with this content.", schema_ref("Channel")) }), &[]),
                "get": get_op("List channels in creation order.", vec![cursor(), limit()], list("Channel"))
            },
            "/v1/channels/{id}": { "get": get_op("One channel.", vec![path_param("id", "Channel id.")], response("The channel.", schema_ref("Channel"))) },
            "/v1/merchants": {
                "post": post("Create a merchant (idempotent on id and content).", "merchants:write", "CreateMerchant",
                    json!({ "201": response("Created.", schema_ref("Merchant")), "200": response("Already existed with this content.", schema_ref("Merchant")) }), &[]),
                "get": get_op("List merchants in creation order.", vec![cursor(), limit()], list("Merchant"))
            },
            "/v1/merchants/{id}": { "get": get_op("One merchant.", vec![path_param("id", "Merchant id.")], response("The merchant.", schema_ref("Merchant"))) },
            "/v1/merchants/{id}/balances": { "get": get_op("A merchant's balances.", vec![path_param("id", "Merchant id.")], response("Balances in minor units.", schema_ref("Balances"))) },
            "/v1/payments": {
                "post": post("Record a pay-in reported by a channel.", "payments:write", "CreatePayment",
                    json!({ "201": response("Recorded.", schema_ref("Payment")), "200": response("This trade number was recorded before with equal content.", schema_ref("Payment")) }), &[]),
                "get": get_op("Order query, newest first. One request examines at most 10,000 payments; a page can then be short, or empty, with a next_cursor to continue.", vec![
                    query_param("merchant_id", "Only this merchant's payments.", json!({ "type": "string" })),
                    query_param("merchant_order_no", "Only this merchant order number (needs merchant_id).", json!({ "type": "string" })),
                    query_param("channel_id", "Only this channel's payments.", json!({ "type": "string" })),
                    query_param("channel_trade_no", "The payment of this channel trade number (needs channel_id).", json!({ "type": "string" })),
                    query_param("from", "Recorded at or after (RFC 3339).", json!({ "type": "string", "format": "date-time" })),
                    query_param("to", "Recorded before (RFC 3339).", json!({ "type": "string", "format": "date-time" })),
                    cursor(), limit()
                ], list("Payment"))
            },
            "/v1/payments/bulk": { "post": post("Record many pay-ins in one request, applied in order in one batch.", "payments:write", "CreatePayments",
                json!({ "200": response("One result per pay-in.", schema_ref("BulkResults")) }), &[]) },
            "/v1/payments/{id}": { "get": get_op("One payment.", vec![path_param("id", "Payment id, pay_N.")], response("The payment.", schema_ref("Payment"))) },
            "/v1/ledger/accounts/{id}": { "get": get_op("One ledger account with its balances.", vec![path_param("id", "Account id (integer).")], response("The account.", schema_ref("Account"))) },
            "/v1/ledger/transfers": { "get": get_op("An account's transaction detail, newest first.", vec![
                json!({ "name": "account_id", "in": "query", "required": true, "schema": { "type": "integer" } }),
                cursor(), limit()
            ], list("Transfer")) },
            "/v1/ledger/trial-balance": { "get": get_op("Totals per currency; balanced is true when debits equal credits.", vec![], response("The trial balance.", schema_ref("TrialBalance"))) },
            "/v1/merchants/{id}/terms": { "post": post("Add a terms version; it takes effect at effective_from (default now). Pay-ins are governed by the version in force when they are recorded.", "merchants:write", "Terms", json!({ "200": response("The merchant with its new terms.", schema_ref("Merchant")) }), &[]) },
            "/v1/merchants/{id}/lots": { "get": get_op("A merchant's lots: claims by channel and business date, with what was drawn and paid.", vec![path_param("id", "Merchant id.")], response("Lots, oldest first.", json!({ "type": "object", "properties": { "data": { "type": "array", "items": schema_ref("Lot") } } }))) },
            "/v1/calendars/{id}": { "get": get_op("A business calendar with every loaded year.", vec![path_param("id", "Calendar id, e.g. cn.")], response("The calendar.", json!({ "type": "object" }))) },
            "/v1/calendars/{id}/years/{year}": { "post": post("Load or replace one year of holidays and make-up working days.", "admin", "CalendarYear", json!({ "200": response("Loaded.", json!({ "type": "object" })) }), &[]) },
            "/v1/funders": {
                "post": post("Create a funder: the platform's position or a partner's credit line.", "admin", "CreateFunder", json!({ "201": response("Created.", schema_ref("Funder")), "200": response("Already existed with this content.", schema_ref("Funder")) }), &[]),
                "get": get_op("Funders with their limits and use.", vec![], response("Funders.", json!({ "type": "object", "properties": { "data": { "type": "array", "items": schema_ref("Funder") } } })))
            },
            "/v1/payouts": {
                "post": post("Request a withdrawal (funded claims) or an advance (unfunded claims, 垫资). The claims drawn cover the amount plus every fee, at once.", "payouts:write", "CreatePayout", json!({ "201": response("Created.", schema_ref("Payout")), "200": response("This request id was used before with the same content.", schema_ref("Payout")) }), &[]),
                "get": get_op("Payouts, newest first.", vec![
                    query_param("merchant_id", "Only this merchant's payouts.", json!({ "type": "string" })),
                    query_param("status", "created, sent, succeeded, failed or unknown.", json!({ "type": "string" })),
                    limit()
                ], response("Payouts.", json!({ "type": "object", "properties": { "data": { "type": "array", "items": schema_ref("Payout") } } })))
            },
            "/v1/payouts/quote": { "get": get_op("The fee a payout would bear if requested now.", vec![
                json!({ "name": "merchant_id", "in": "query", "required": true, "schema": { "type": "string" } }),
                json!({ "name": "amount", "in": "query", "required": true, "schema": { "type": "integer" } }),
                json!({ "name": "kind", "in": "query", "required": true, "schema": { "type": "string", "enum": ["withdrawal", "advance"] } })
            ], response("The quote.", json!({ "type": "object", "properties": { "amount": { "type": "integer" }, "fee": { "type": "integer" }, "claims_drawn": { "type": "integer" }, "days_to_funds": { "type": "integer" } } }))) },
            "/v1/payouts/{id}": { "get": get_op("One payout.", vec![path_param("id", "Payout id, po_N.")], response("The payout.", schema_ref("Payout"))) },
            "/v1/payouts/{id}/resolve": { "post": post("An operator or reconciliation resolves a payout: succeeded, failed (claims return to the merchant) or unknown. Final statuses never change.", "admin", "ResolvePayout", json!({ "200": response("The payout.", schema_ref("Payout")) }), &[]) },
            "/v1/channel-settlements": {
                "post": post("A channel's money for a business date arrived: its sealed lots become funded, claims become available, advances on them are repaid. A short or excess amount is recorded as a discrepancy.", "settlements:write", "CreateChannelSettlement", json!({ "201": response("Recorded.", schema_ref("ChannelSettlement")), "200": response("This bank reference was recorded before with the same content.", schema_ref("ChannelSettlement")) }), &[]),
                "get": get_op("Channel settlements, newest first.", vec![], response("Settlements.", json!({ "type": "object", "properties": { "data": { "type": "array", "items": schema_ref("ChannelSettlement") } } })))
            },
            "/v1/refunds": {
                "post": post("Refund a payment, partially or fully, from the merchant's claims; refunds and reversals of a payment never exceed it. Too little money: insufficient_funds.", "refunds:write", "CreateRefund", json!({ "201": response("Refunded.", schema_ref("Refund")), "200": response("This request id was used before with the same content.", schema_ref("Refund")) }), &[]),
                "get": get_op("Refunds and reversals, newest first.", vec![
                    query_param("merchant_id", "Only this merchant's.", json!({ "type": "string" })),
                    query_param("payment_id", "Only this payment's.", json!({ "type": "string" })),
                    limit()
                ], response("Refunds.", json!({ "type": "object", "properties": { "data": { "type": "array", "items": schema_ref("Refund") } } })))
            },
            "/v1/reversals": { "post": post("A channel reverses a payment (chargeback): the merchant's claims bear it; what they cannot cover becomes debt, recovered from later claims.", "settlements:write", "CreateReversal", json!({ "201": response("Reversed.", schema_ref("Refund")), "200": response("This reference was used before with the same content.", schema_ref("Refund")) }), &[]) },
            "/v1/merchants/{id}/holds": {
                "post": post("Hold (freeze) an amount of the merchant's available money.", "admin", "CreateHold", json!({ "201": response("Held.", schema_ref("Hold")), "200": response("This hold id was used before with the same content.", schema_ref("Hold")) }), &[]),
                "get": get_op("A merchant's holds.", vec![path_param("id", "Merchant id.")], response("Holds.", json!({ "type": "object", "properties": { "data": { "type": "array", "items": schema_ref("Hold") } } })))
            },
            "/v1/holds/{id}/release": { "post": { "summary": "Release a hold (needs scope admin).", "security": [{ "bearer": [] }], "parameters": [path_param("id", "Hold id."), idempotency_header()], "responses": { "200": response("Released.", schema_ref("Hold")), "default": error_response() } } },
            "/v1/merchants/{id}/freeze": { "post": post("Stop or resume every payout of a merchant.", "admin", "SetFrozen", json!({ "200": response("The merchant's state.", json!({ "type": "object", "properties": { "merchant_id": { "type": "string" }, "frozen": { "type": "boolean" } } })) }), &[]) },
            "/v1/reports/settlement-statement": { "get": get_op("A merchant's daily settlement statement: its lots of the business date and the payouts of that date.", vec![
                json!({ "name": "merchant_id", "in": "query", "required": true, "schema": { "type": "string" } }),
                json!({ "name": "date", "in": "query", "required": true, "schema": { "type": "string", "format": "date" } }),
                report_format()
            ], report_response()) },
            "/v1/reports/funders": { "get": get_op("Funder usage: limits, use and room.", vec![report_format()], report_response()) },
            "/v1/reports/margin": { "get": get_op("The platform's margin for a business date by merchant: pay-in fees − channel costs + payout fees − refunded fees.", vec![
                json!({ "name": "date", "in": "query", "required": true, "schema": { "type": "string", "format": "date" } }),
                report_format()
            ], report_response()) },
            "/v1/reports/floor-exceptions": { "get": get_op("Every floor-price exception: terms that allow a fee below cost, and the lots holding pay-ins that used it.", vec![report_format()], report_response()) },
            "/v1/merchants/{id}/users": {
                "post": post("Open the merchant's master account (one per merchant). The password (10–128 characters) is stored only as a peppered argon2id hash and never answered.", "admin", "CreateMaster", json!({ "201": response("Created.", schema_ref("MerchantUser")) }), &[]),
                "get": get_op("The merchant's users.", vec![path_param("id", "Merchant id.")], response("Users.", json!({ "type": "object", "properties": { "data": { "type": "array", "items": schema_ref("MerchantUser") } } })))
            },
            "/v1/audit": { "get": { "summary": "The hash-chained audit log of merchant users' actions, oldest first (needs scope admin). `dzero audit verify` checks the stored chain.", "security": [{ "bearer": [] }], "parameters": [
                query_param("after", "Entries after this sequence number.", json!({ "type": "integer" })),
                query_param("limit", "At most this many (default 100, at most 1000).", json!({ "type": "integer" }))
            ], "responses": { "200": response("Entries.", json!({ "type": "object" })), "default": error_response() } } },
            "/v1/exposure-limit": { "post": post("Set the platform's overall exposure limit: the most it may have advanced and not yet funded, over every merchant and funder (0: only the funders' limits).", "admin", "ExposureLimit", json!({ "200": response("The limit.", schema_ref("ExposureLimit")) }), &[]) },
            "/v1/reports/exposure": { "get": get_op("Platform exposure now (advances paid out whose channel money has not arrived): a row per merchant with exposure and per funder, with the total and the overall limit.", vec![report_format()], report_response()) },
            "/.well-known/oauth-authorization-server": { "get": { "summary": "Authorization-server metadata (RFC 8414): endpoints, S256 as the only PKCE method, ES256 for DPoP, the code and refresh-token grants.", "responses": { "200": response("Metadata.", json!({ "type": "object" })) } } },
            "/v1/oauth/authorize": { "post": { "summary": "Merchant sign-in, step one: merchant_id, username, password, client_id, redirect_uri, device_id and an S256 code_challenge give a single-use code valid 60 s. Throttled per account and per client; an unknown user and a wrong password get the same answer (invalid_credentials).", "responses": { "200": response("The code.", json!({ "type": "object", "properties": { "code": { "type": "string" }, "expires_in": { "type": "integer" } } })), "default": error_response() } } },
            "/v1/oauth/token": { "post": { "summary": "Step two, with a DPoP proof header: grant_type authorization_code (code, code_verifier, client_id, redirect_uri; a new device key registers the device, pending until confirmed unless it is the master's first) or refresh_token (rotates; a reused one ends the session). Answers a 5-minute DPoP-bound access token and a refresh token.", "responses": { "200": response("Tokens.", json!({ "type": "object", "properties": { "access_token": { "type": "string" }, "token_type": { "const": "DPoP" }, "expires_in": { "type": "integer" }, "refresh_token": { "type": "string" }, "session_id": { "type": "string" } } })), "default": error_response() } } },
            "/v1/me": { "get": merchant_op("The signed-in user, its permissions, session, device and the merchant's login policy.") },
            "/v1/me/devices": { "get": merchant_op("The caller's devices; with manage_devices, all of the merchant's.") },
            "/v1/me/devices/{id}/confirm": { "post": merchant_op("Confirm a pending device, from an active device of its user or of a device manager.") },
            "/v1/me/devices/{id}/revoke": { "post": merchant_op("Revoke a device: its sessions and tokens stop at once.") },
            "/v1/me/devices/{id}/lost": { "post": merchant_op("Report a device lost ({\"lost\": true}) or found ({\"lost\": false}); losing it ends its sessions.") },
            "/v1/me/sessions": { "get": merchant_op("The caller's sessions, live and ended, with why they ended.") },
            "/v1/me/sessions/{id}": { "delete": merchant_op("End a session (the owner, or a device manager of the merchant).") },
            "/v1/me/notifications": { "get": merchant_op("The caller's security notifications, oldest first, ?after=seq: a new device registered, a device confirmed, revoked, lost or found, a sign-in, a stolen refresh token, a locked payment password, being disabled. next_after pages on.") },
            "/v1/me/login-policy": { "put": merchant_op("The master sets the merchant's concurrent-login policy: {\"mode\": \"allow_up_to\", \"devices\": 1–5}, {\"mode\": \"single_session\"} or {\"mode\": \"refuse_new\"}.") },
            "/v1/me/balances": { "get": merchant_op("The caller's merchant balances (needs view).") },
            "/v1/me/payments": { "get": merchant_op("The order query over the caller's merchant only (needs view); the same filters and paging as GET /v1/payments, merchant_id ignored.") },
            "/v1/me/transactions": { "get": merchant_op("Transaction detail of one of the caller's merchant accounts, ?account=pending|available|frozen|advanced|debt, newest first, cursor paging (needs view).") },
            "/v1/me/statement": { "get": merchant_op("The caller's merchant statement of ?date=YYYY-MM-DD (its lots of that business date and that day's payouts), JSON or CSV with format=csv (needs view).") },
            "/v1/me/payments/{id}": { "get": merchant_op("One payment of the caller's merchant (needs view); another merchant's answers 404.") },
            "/v1/me/users": {
                "get": merchant_op("The merchant's users (needs manage_users)."),
                "post": merchant_op_answering("Create an operator {username, password, permissions, refund_cap_single, refund_cap_daily, stores} holding at most the caller's permissions (needs manage_users). stores limits it to payments taken at those stores (empty: all; a caller limited to stores hands out only its own); such a user sees no merchant-wide balances, statements or transaction detail.", "201", "The operator.")
            },
            "/v1/me/users/{id}/permissions": { "put": merchant_op("Replace an operator's permissions {permissions, challenge_id, signature, payment_password} (needs manage_users; only permissions the caller holds; step-up with a challenge for action permissions, amount 0, currency \"\", destination the user id); applies from the operator's next request.") },
            "/v1/me/users/{id}/stores": { "put": merchant_op("Limit an operator to some stores {stores, challenge_id, signature, payment_password} (empty: all; only within the caller's own stores; step-up with a challenge for action stores, amount 0, currency \"\", destination the user id); applies from the operator's next request.") },
            "/v1/me/users/{id}/disabled": { "post": merchant_op("Disable ({\"disabled\": true}) or enable an operator; disabling ends its sessions at once.") },
            "/v1/me/payment-password": { "put": merchant_op("Set the caller's payment password {login_password, payment_password}: at least six digits, common ones refused; stored as a peppered argon2id hash.") },
            "/v1/me/totp": { "post": merchant_op("Start enrolling an authenticator (TOTP, RFC 6238, SHA-256, 6 digits, 30 s): answers nonce, secret (base32) and an otpauth URI. The seed is derived from the server's pepper and the nonce, never stored.") },
            "/v1/me/totp/confirm": { "post": merchant_op("Confirm the enrollment {nonce, code} with a first code.") },
            "/v1/me/challenges": { "post": merchant_op_answering("A one-time step-up challenge {action: refund | payout | bank_account | approve | permissions | stores, amount, currency, destination (the payment id, bank account number, approval id or user id)} for the device to sign: answers challenge_id, the claims to sign and their JWS typ (dzero-stepup+jwt, ES256). Valid 300 s.", "201", "The challenge to sign.") },
            "/v1/me/refunds": { "post": merchant_op_answering("A refund from the app {payment_id, amount, challenge_id, signature | otp, payment_password}: needs refund, keeps to the operator's single-refund cap, consumes the challenge (bound to the exact operation, signed by the device key) and checks the payment password (locked after five failures). With otp (the fallback, no device signature) the level is two_factor and the user's refunds that day are capped at 5,000.00. Answers the refund with its verification_level; audited with its factors.", "201", "The refund (202 with a pending approval above the merchant's threshold).") },
            "/v1/me/payouts": { "post": merchant_op_answering("A payout from the app {amount, kind: withdrawal | advance, challenge_id, signature, payment_password}: needs payout and a step-up whose challenge (action payout) names the merchant's bank account number as destination; answers 202 with a pending approval, which another user with approve must approve (the payout runs then).", "202", "The pending approval.") },
            "/v1/me/bank-account": { "put": merchant_op_answering("Change the merchant's bank account {holder, number, bank, challenge_id, signature, payment_password}: needs manage_bank_account and a step-up whose challenge (action bank_account, amount 0, currency \"\") names the new number; answers 202 with a pending approval, and another user's approval puts it in force.", "202", "The pending approval.") },
            "/v1/me/approval-policy": { "put": merchant_op("The master sets {\"refund_above\": fen | null}: app refunds above it wait for a second user's approval (maker-checker).") },
            "/v1/me/approvals": { "get": merchant_op("The merchant's approvals, pending and decided (needs view).") },
            "/v1/me/approvals/{id}/approve": { "post": merchant_op("Another user with approve approves {challenge_id, signature, payment_password}, with its own step-up (action approve, the approval's amount, the approval id as destination); the refund runs then. Approving one's own request answers self_approval.") },
            "/v1/me/approvals/{id}/reject": { "post": merchant_op("Another user with approve rejects the request; nothing runs.") },
            "/v1/test-clock": { "get": { "summary": "The sandbox clock (only under dzero serve --sandbox).", "responses": { "200": { "description": "now" }, "404": error_response() } } },
            "/v1/test-clock/advance": { "post": post("Move the sandbox clock forward; answers when every cutoff and settlement run due by then is done.", "admin", "AdvanceClock", json!({ "200": response("The new time.", json!({ "type": "object", "properties": { "now": { "type": "string" } } })) }), &[]) }
        }
    })
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (bound, count) in HISTOGRAM_BOUNDS.iter().zip(h.cumulative) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", h.sum, h.count);
}

/// The engine's metrics in the Prometheus text exposition format.
pub fn prometheus(m: &MetricsSnapshot, stopped: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP dzero_engine_queue_depth Requests waiting for the sequencer.\n# TYPE dzero_engine_queue_depth gauge\ndzero_engine_queue_depth {}",
        m.queue_depth
    );
    let _ = writeln!(
        out,
        "# HELP dzero_engine_batches_committed_total Batches made durable.\n# TYPE dzero_engine_batches_committed_total counter\ndzero_engine_batches_committed_total {}",
        m.batches_committed
    );
    let _ = writeln!(
        out,
        "# HELP dzero_engine_commands_committed_total Commands made durable.\n# TYPE dzero_engine_commands_committed_total counter\ndzero_engine_commands_committed_total {}",
        m.commands_committed
    );
    let _ = writeln!(
        out,
        "# HELP dzero_engine_stopped 1 after a storage failure stopped the engine.\n# TYPE dzero_engine_stopped gauge\ndzero_engine_stopped {}",
        u8::from(stopped)
    );
    histogram(
        &mut out,
        "dzero_engine_batch_commands",
        "Commands per committed batch.",
        &m.batch_commands,
    );
    histogram(
        &mut out,
        "dzero_engine_commit_latency_microseconds",
        "Time to make one batch durable.",
        &m.commit_latency_us,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed document must equal what the code serves; regenerate it with
    /// `UPDATE_OPENAPI=1 cargo test -p api openapi`.
    #[test]
    fn committed_openapi_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let generated = format!("{}\n", serde_json::to_string_pretty(&document()).unwrap());
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is stale: run UPDATE_OPENAPI=1 cargo test -p api openapi"
        );
    }

    #[test]
    fn prometheus_output_names_every_metric() {
        let text = prometheus(&MetricsSnapshot::default(), false);
        for name in [
            "dzero_engine_queue_depth",
            "dzero_engine_batches_committed_total",
            "dzero_engine_batch_commands_bucket",
            "dzero_engine_commit_latency_microseconds_count",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
    }
}
