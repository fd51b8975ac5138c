//! What the store-lease controllers (the analysis controller, the scheduler) share: a name
//! for this process as a lease owner, and store calls run off the async threads.

use std::sync::{Arc, Mutex};

use strangler_store::{Store, StoreError};

/// A store a controller owns, called through [`on_store`].
pub type OwnedStore = Arc<Mutex<Box<dyn Store>>>;

/// A lease owner's (or a proxy's) name: the process id and a random suffix, unique per
/// start even when a process id is reused.
pub fn owner_id() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Runs `f` on the store on a blocking thread; an error comes back as its message.
pub async fn on_store<T: Send + 'static>(
    store: &OwnedStore,
    f: impl FnOnce(&mut dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || {
        let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut **store)
    })
    .await
    .map_err(|err| err.to_string())?
    .map_err(|err| err.to_string())
}
