//! The route table: the one list the router matches against and the OpenAPI test checks.

use hyper::Method;

/// What a matched request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteId {
    Sign,
    Batch,
    PetitionGet,
    PetitionList,
    PetitionCountries,
    PetitionRegions,
    PetitionHistory,
    PetitionPut,
    PetitionClose,
    Milestones,
    Events,
    EventStream,
    PetitionRespond,
    BlockList,
    BlockAdd,
    BlockDelete,
    AllowList,
    AllowAdd,
    AllowDelete,
    SwitchesGet,
    SwitchesPut,
    PetitionPause,
    PetitionResume,
    PetitionSources,
    WebhookList,
    WebhookPut,
    WebhookGet,
    WebhookDelete,
    Validate,
    InvalidationCreate,
    InvalidationList,
    InvalidationGet,
    InvalidationCancel,
    Metrics,
    Livez,
    Readyz,
    OpenApi,
    Console,
    Root,
}

impl RouteId {
    /// Metric labels, by `RouteId as usize`, plus one for unmatched requests.
    pub const LABELS: [&'static str; 40] = [
        "sign",
        "batch",
        "petition_get",
        "petition_list",
        "petition_countries",
        "petition_regions",
        "petition_history",
        "petition_put",
        "petition_close",
        "milestones",
        "events",
        "event_stream",
        "petition_respond",
        "block_list",
        "block_add",
        "block_delete",
        "allow_list",
        "allow_add",
        "allow_delete",
        "switches_get",
        "switches_put",
        "petition_pause",
        "petition_resume",
        "petition_sources",
        "webhook_list",
        "webhook_put",
        "webhook_get",
        "webhook_delete",
        "validate",
        "invalidation_create",
        "invalidation_list",
        "invalidation_get",
        "invalidation_cancel",
        "metrics",
        "livez",
        "readyz",
        "openapi",
        "console",
        "root",
        "unmatched",
    ];
}

/// Every route the server answers: method and path template (`{id}` is a petition id, under
/// `/v1/invalidations` a job id, under `/v1/webhooks` a webhook name, under `/v1/admin` a list
/// entry's id).
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/petitions/{id}/signatures"),
    ("POST", "/v1/signatures:batch"),
    ("GET", "/v1/petitions/{id}"),
    ("GET", "/v1/petitions"),
    ("GET", "/v1/petitions/{id}/countries"),
    ("GET", "/v1/petitions/{id}/regions"),
    ("GET", "/v1/petitions/{id}/history"),
    ("PUT", "/v1/petitions/{id}"),
    ("POST", "/v1/petitions/{id}/close"),
    ("GET", "/v1/milestones"),
    ("GET", "/v1/events"),
    ("GET", "/v1/events/stream"),
    ("PUT", "/v1/petitions/{id}/response"),
    ("GET", "/v1/admin/blocks"),
    ("POST", "/v1/admin/blocks"),
    ("DELETE", "/v1/admin/blocks/{id}"),
    ("GET", "/v1/admin/allows"),
    ("POST", "/v1/admin/allows"),
    ("DELETE", "/v1/admin/allows/{id}"),
    ("GET", "/v1/admin/switches"),
    ("PUT", "/v1/admin/switches"),
    ("POST", "/v1/petitions/{id}/pause"),
    ("POST", "/v1/petitions/{id}/resume"),
    ("GET", "/v1/petitions/{id}/sources"),
    ("GET", "/v1/webhooks"),
    ("PUT", "/v1/webhooks/{id}"),
    ("GET", "/v1/webhooks/{id}"),
    ("DELETE", "/v1/webhooks/{id}"),
    ("POST", "/v1/validations"),
    ("POST", "/v1/invalidations"),
    ("GET", "/v1/invalidations"),
    ("GET", "/v1/invalidations/{id}"),
    ("POST", "/v1/invalidations/{id}/cancel"),
    ("GET", "/metrics"),
    ("GET", "/livez"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/console"),
    ("GET", "/"),
];

const IDS: [RouteId; 39] = [
    RouteId::Sign,
    RouteId::Batch,
    RouteId::PetitionGet,
    RouteId::PetitionList,
    RouteId::PetitionCountries,
    RouteId::PetitionRegions,
    RouteId::PetitionHistory,
    RouteId::PetitionPut,
    RouteId::PetitionClose,
    RouteId::Milestones,
    RouteId::Events,
    RouteId::EventStream,
    RouteId::PetitionRespond,
    RouteId::BlockList,
    RouteId::BlockAdd,
    RouteId::BlockDelete,
    RouteId::AllowList,
    RouteId::AllowAdd,
    RouteId::AllowDelete,
    RouteId::SwitchesGet,
    RouteId::SwitchesPut,
    RouteId::PetitionPause,
    RouteId::PetitionResume,
    RouteId::PetitionSources,
    RouteId::WebhookList,
    RouteId::WebhookPut,
    RouteId::WebhookGet,
    RouteId::WebhookDelete,
    RouteId::Validate,
    RouteId::InvalidationCreate,
    RouteId::InvalidationList,
    RouteId::InvalidationGet,
    RouteId::InvalidationCancel,
    RouteId::Metrics,
    RouteId::Livez,
    RouteId::Readyz,
    RouteId::OpenApi,
    RouteId::Console,
    RouteId::Root,
];

/// Why no route matched.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NoRoute {
    /// No template matches the path: 404.
    NotFound,
    /// The path matches, with other methods: 405 with `Allow`.
    MethodNotAllowed(String),
}

/// Matches a request against [`ROUTES`]. Returns the route and the `{id}` segment, if any.
/// `HEAD` matches every `GET` route (hyper sends the answer's headers without its body).
pub(crate) fn route<'p>(method: &Method, path: &'p str) -> Result<(RouteId, &'p str), NoRoute> {
    let mut allowed: Vec<&str> = Vec::new();
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    for (at, (route_method, template)) in ROUTES.iter().enumerate() {
        let Some(id) = matches(template, path) else {
            continue;
        };
        if method == *route_method {
            return Ok((IDS[at], id));
        }
        allowed.push(route_method);
        if *route_method == "GET" {
            allowed.push("HEAD");
        }
    }
    if allowed.is_empty() {
        Err(NoRoute::NotFound)
    } else {
        Err(NoRoute::MethodNotAllowed(allowed.join(", ")))
    }
}

/// Whether `path` fits `template`; the `{id}` segment's value ("" if the template has none).
/// A template holds at most one `{id}`, as a whole segment: the path must then be the text
/// before it, a non-empty segment without `/`, and the text after it.
fn matches<'p>(template: &str, path: &'p str) -> Option<&'p str> {
    match template.split_once("{id}") {
        None => (template == path).then_some(""),
        Some((before, after)) => {
            let id = path.strip_prefix(before)?.strip_suffix(after)?;
            (!id.is_empty() && !id.contains('/')).then_some(id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_ids_agree() {
        assert_eq!(ROUTES.len(), IDS.len());
        assert_eq!(RouteId::LABELS.len(), IDS.len() + 1);
        for (at, id) in IDS.iter().enumerate() {
            assert_eq!(*id as usize, at, "IDS is in RouteId order");
        }
    }

    #[test]
    fn routes_match() {
        type Case<'a> = (Method, &'a str, Result<(RouteId, &'a str), NoRoute>);
        let cases: &[Case] = &[
            (
                Method::POST,
                "/v1/petitions/p-1/signatures",
                Ok((RouteId::Sign, "p-1")),
            ),
            (
                Method::GET,
                "/v1/petitions/p-1",
                Ok((RouteId::PetitionGet, "p-1")),
            ),
            (
                Method::PUT,
                "/v1/petitions/p-1",
                Ok((RouteId::PetitionPut, "p-1")),
            ),
            (
                Method::GET,
                "/v1/petitions",
                Ok((RouteId::PetitionList, "")),
            ),
            (
                Method::POST,
                "/v1/signatures:batch",
                Ok((RouteId::Batch, "")),
            ),
            (
                Method::GET,
                "/v1/petitions/p-1/countries",
                Ok((RouteId::PetitionCountries, "p-1")),
            ),
            (
                Method::HEAD,
                "/v1/petitions/p-1/regions",
                Ok((RouteId::PetitionRegions, "p-1")),
            ),
            (
                Method::GET,
                "/v1/petitions/p-1/history",
                Ok((RouteId::PetitionHistory, "p-1")),
            ),
            (
                Method::POST,
                "/v1/petitions/p-1/history",
                Err(NoRoute::MethodNotAllowed("GET, HEAD".into())),
            ),
            (
                Method::GET,
                "/v1/petitions/p-1/countries/GB",
                Err(NoRoute::NotFound),
            ),
            (
                Method::DELETE,
                "/v1/petitions/p-1",
                Err(NoRoute::MethodNotAllowed("GET, HEAD, PUT".into())),
            ),
            (
                Method::HEAD,
                "/v1/petitions/p-1",
                Ok((RouteId::PetitionGet, "p-1")),
            ),
            (
                Method::HEAD,
                "/v1/signatures:batch",
                Err(NoRoute::MethodNotAllowed("POST".into())),
            ),
            (Method::POST, "/v1/validations", Ok((RouteId::Validate, ""))),
            (
                Method::GET,
                "/v1/invalidations",
                Ok((RouteId::InvalidationList, "")),
            ),
            (
                Method::POST,
                "/v1/invalidations",
                Ok((RouteId::InvalidationCreate, "")),
            ),
            (
                Method::GET,
                "/v1/invalidations/7",
                Ok((RouteId::InvalidationGet, "7")),
            ),
            (
                Method::POST,
                "/v1/invalidations/7/cancel",
                Ok((RouteId::InvalidationCancel, "7")),
            ),
            (
                Method::GET,
                "/v1/invalidations/7/cancel",
                Err(NoRoute::MethodNotAllowed("POST".into())),
            ),
            (
                Method::DELETE,
                "/v1/invalidations",
                Err(NoRoute::MethodNotAllowed("POST, GET, HEAD".into())),
            ),
            (Method::GET, "/v1/petitions/", Err(NoRoute::NotFound)),
            (Method::GET, "/v1/petitions/a/b/c", Err(NoRoute::NotFound)),
            (Method::GET, "/", Ok((RouteId::Root, ""))),
            (Method::HEAD, "/console", Ok((RouteId::Console, ""))),
            (Method::GET, "/console/", Err(NoRoute::NotFound)),
            (Method::GET, "/consoles", Err(NoRoute::NotFound)),
            (
                Method::POST,
                "/v1/petitions//signatures",
                Err(NoRoute::NotFound),
            ),
        ];
        for (method, path, expected) in cases {
            assert_eq!(&route(method, path), expected, "{method} {path}");
        }
    }

    /// Each operation of the OpenAPI document is named after its route's metric label, in
    /// lower camel case (`petition_get`: `petitionGet`), so a client's generated method, the
    /// document and the `route` label of the metrics name the same thing.
    #[test]
    fn operation_ids_are_the_route_labels() {
        let root: serde_json::Value =
            serde_json::from_str(crate::OPENAPI_JSON).expect("openapi.json is JSON");
        for (at, (method, path)) in ROUTES.iter().enumerate() {
            let label = RouteId::LABELS[IDS[at] as usize];
            let mut camel = String::new();
            for (n, word) in label.split('_').enumerate() {
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    if n == 0 {
                        camel.push(first);
                    } else {
                        camel.push(first.to_ascii_uppercase());
                    }
                    camel.extend(chars);
                }
            }
            let operation = &root["paths"][path][method.to_ascii_lowercase()];
            assert_eq!(
                operation["operationId"].as_str(),
                Some(camel.as_str()),
                "{method} {path}"
            );
        }
    }
}
