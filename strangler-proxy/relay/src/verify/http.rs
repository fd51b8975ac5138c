//! A participant's snapshot over HTTP: `GET /_snapshot` and `GET /_snapshot/types`, and its
//! `POST /_events` for repairs, on the same client as its feed.

use strangler_feed::{ApplyReport, Event, SnapshotPage, SnapshotTypes};

use super::{SnapshotReader, VerifyError, one_line};
use crate::http::Participant;
use crate::{EventSink, Pushed};

impl Participant {
    /// GETs `path` with `query` and reads the JSON answer; an error answer is `Refused` with
    /// the participant's own message.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, VerifyError> {
        let read = |message: String| VerifyError::Read {
            side: self.name.clone(),
            message,
        };
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.url))
            .map_err(|err| read(format!("{}{path} is not a URL: {err}", self.url)))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|err| read(one_line(&err)))?;
        let status = response.status();
        if !status.is_success() {
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            let message = body["error"]["message"]
                .as_str()
                .map_or_else(|| format!("{path} failed"), str::to_string);
            return Err(VerifyError::Refused {
                side: self.name.clone(),
                status: status.as_u16(),
                message,
            });
        }
        response
            .json()
            .await
            .map_err(|err| read(format!("reading the answer to {path}: {}", one_line(&err))))
    }
}

impl SnapshotReader for Participant {
    fn name(&self) -> &str {
        &self.name
    }

    async fn kinds(&self) -> Result<Vec<String>, VerifyError> {
        let types: SnapshotTypes = self.get_json("/_snapshot/types", &[]).await?;
        Ok(types.types)
    }

    async fn page(&self, kind: &str, after: &str, limit: u32) -> Result<SnapshotPage, VerifyError> {
        let limit = limit.to_string();
        self.get_json(
            "/_snapshot",
            &[("type", kind), ("after", after), ("limit", &limit)],
        )
        .await
    }

    async fn apply(&self, events: &[Event]) -> Result<Option<ApplyReport>, VerifyError> {
        match self.push(events).await {
            Ok(Pushed::Applied(report)) => Ok(Some(report)),
            Ok(Pushed::TooLarge) => Err(VerifyError::Repair {
                side: self.name.clone(),
                message: "the repair event is too large for it".to_string(),
            }),
            Err(err) => Err(VerifyError::Repair {
                side: self.name.clone(),
                message: err.to_string(),
            }),
        }
    }
}
