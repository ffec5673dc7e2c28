//! Abuse controls the engine enforces on every signature: the block lists (addresses and
//! networks, email domains, exact emails), the allow list (addresses and networks, exempt from
//! the limits of signatures per address), and the switches that stop signing: everywhere
//! (`paused`), every change (`read_only`), or one petition.
//!
//! Lists and switches change only through the writer, synced before the change is answered, and
//! are in effect for every signature admitted after that. Admission reads them under one read
//! lock per call; with no blocks listed it reads nothing more.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ipnet::IpNet;
use parking_lot::{RwLock, RwLockReadGuard};

use crate::error::StoreError;

/// Most entries the block and allow lists hold together.
pub const LIST_ENTRIES_MAX: usize = 100_000;
/// Longest value of a list entry (an email's or a domain's longest).
pub const LIST_VALUE_BYTES_MAX: usize = 254;
/// Longest `by` of a change (who made it).
pub const BY_BYTES_MAX: usize = 64;

/// Which list an entry is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ListName {
    /// Signatures it matches are refused.
    Block,
    /// Addresses and networks exempt from the limits of signatures per address.
    Allow,
}

impl ListName {
    pub fn as_str(self) -> &'static str {
        match self {
            ListName::Block => "block",
            ListName::Allow => "allow",
        }
    }

    fn to_byte(self) -> u8 {
        match self {
            ListName::Block => 0,
            ListName::Allow => 1,
        }
    }

    fn from_byte(byte: u8) -> Option<ListName> {
        match byte {
            0 => Some(ListName::Block),
            1 => Some(ListName::Allow),
            _ => None,
        }
    }
}

/// What a list entry matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryKind {
    /// The signer's address (`ip`): one address, or a network in CIDR form (`192.0.2.0/24`,
    /// `2001:db8::/32`). An IPv4-mapped IPv6 address is its IPv4 address.
    Ip,
    /// The domain of the signer's email: `example.org` (that domain alone) or `*.example.org`
    /// (every domain under it, not itself). Case does not matter.
    EmailDomain,
    /// One email, whole; case does not matter.
    Email,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Ip => "ip",
            EntryKind::EmailDomain => "email_domain",
            EntryKind::Email => "email",
        }
    }

    /// The kind named `text` (`ip`, `email_domain` or `email`).
    pub fn parse(text: &str) -> Option<EntryKind> {
        match text {
            "ip" => Some(EntryKind::Ip),
            "email_domain" => Some(EntryKind::EmailDomain),
            "email" => Some(EntryKind::Email),
            _ => None,
        }
    }

    fn to_byte(self) -> u8 {
        match self {
            EntryKind::Ip => 0,
            EntryKind::EmailDomain => 1,
            EntryKind::Email => 2,
        }
    }

    fn from_byte(byte: u8) -> Option<EntryKind> {
        match byte {
            0 => Some(EntryKind::Ip),
            1 => Some(EntryKind::EmailDomain),
            2 => Some(EntryKind::Email),
            _ => None,
        }
    }
}

/// Who made a change and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Who, as the caller names itself (the HTTP server: the key's role and a short id of the
    /// key, e.g. `admin:3f9a61c0`).
    pub by: String,
    /// When (Unix milliseconds).
    pub at_ms: u64,
}

/// An entry to add to a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySpec {
    pub list: ListName,
    pub kind: EntryKind,
    /// The address, network, domain or email (see [`EntryKind`]).
    pub value: String,
    /// Who adds it (at most 64 bytes of printable ASCII).
    pub by: String,
}

/// An entry of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// Its number, handed out in order from 1.
    pub id: u64,
    pub list: ListName,
    pub kind: EntryKind,
    /// Its value as matched: a network in its shortest form, domains and emails lower-case.
    pub value: String,
    pub added: Change,
}

/// The engine-wide switches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Switches {
    /// No new signature is taken (validations, reads and administration go on).
    pub paused: bool,
    /// Nothing changes: no signature, validation, petition change or invalidation is taken.
    /// Reads go on, and the switches can be turned back.
    pub read_only: bool,
    /// The last change of the switches (`None`: never changed).
    pub changed: Option<Change>,
}

/// Why a list or switch change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// A field failed validation; nothing changed.
    #[error("{field}: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
    /// No entry has this id.
    #[error("unknown list entry")]
    UnknownEntry,
    /// The same kind and value are on that list already (as the entry with this id).
    #[error("already listed, as entry {0}")]
    Listed(u64),
    /// The lists hold as many entries as they may.
    #[error("the lists hold {0} entries, as many as they may")]
    TooMany(usize),
    /// No petition has this id.
    #[error("unknown petition")]
    UnknownPetition,
    /// The store failed to persist; nothing changed. Retry shortly.
    #[error("storage unavailable, retry later")]
    StorageUnavailable,
    /// The engine is closing or closed.
    #[error("engine is shutting down")]
    ShuttingDown,
}

impl GuardError {
    /// A stable snake_case code for APIs.
    pub fn code(&self) -> &'static str {
        match self {
            GuardError::Invalid { .. } => "invalid_entry",
            GuardError::UnknownEntry => "unknown_entry",
            GuardError::Listed(_) => "already_listed",
            GuardError::TooMany(_) => "too_many_entries",
            GuardError::UnknownPetition => "unknown_petition",
            GuardError::StorageUnavailable => "storage_unavailable",
            GuardError::ShuttingDown => "shutting_down",
        }
    }
}

fn invalid(field: &'static str, reason: &'static str) -> GuardError {
    GuardError::Invalid { field, reason }
}

/// Checks who made a change: 1–64 bytes of printable ASCII.
pub(crate) fn check_by(by: &str) -> Result<(), GuardError> {
    if by.is_empty() || by.len() > BY_BYTES_MAX || !by.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "by",
            "1 to 64 printable ASCII characters without spaces",
        ));
    }
    Ok(())
}

impl EntrySpec {
    /// Checks the spec and gives its value as matched (see [`ListEntry::value`]).
    pub(crate) fn normalized(&self) -> Result<String, GuardError> {
        check_by(&self.by)?;
        let value = self.value.trim();
        if value.is_empty() || value.len() > LIST_VALUE_BYTES_MAX {
            return Err(invalid("value", "1 to 254 characters"));
        }
        match (self.list, self.kind) {
            (ListName::Allow, EntryKind::EmailDomain | EntryKind::Email) => Err(invalid(
                "kind",
                "the allow list holds addresses and networks only (kind ip)",
            )),
            (_, EntryKind::Ip) => parse_network(value)
                .map(|net| net.to_string())
                .ok_or(invalid(
                    "value",
                    "must be an IPv4 or IPv6 address or network in CIDR form (192.0.2.0/24)",
                )),
            (_, EntryKind::EmailDomain) => {
                let domain = value.to_ascii_lowercase();
                let name = domain.strip_prefix("*.").unwrap_or(&domain);
                if crate::signature::labels_ok(name) {
                    Ok(domain)
                } else {
                    Err(invalid(
                        "value",
                        "must be a domain (example.org) or every domain under one (*.example.org)",
                    ))
                }
            }
            (_, EntryKind::Email) => {
                let email = value.to_ascii_lowercase();
                match email.rsplit_once('@') {
                    Some((local, domain))
                        if !local.is_empty()
                            && crate::signature::labels_ok(domain)
                            && email.bytes().all(|b| b.is_ascii_graphic()) =>
                    {
                        Ok(email)
                    }
                    _ => Err(invalid("value", "must be an email (name@example.org)")),
                }
            }
        }
    }
}

/// An address or network, IPv4-mapped IPv6 taken as IPv4, host bits cleared.
fn parse_network(text: &str) -> Option<IpNet> {
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => IpNet::from(text.parse::<IpAddr>().ok()?),
    };
    Some(unmap_network(net).trunc())
}

/// A network of IPv4-mapped IPv6 addresses (`::ffff:0:0/96` and longer) as the IPv4 network.
fn unmap_network(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

/// An address, IPv4-mapped IPv6 taken as IPv4.
#[inline]
pub(crate) fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// An address as 128 bits: IPv4 as its IPv4-mapped IPv6 form, so an address and its mapped
/// form are one key.
pub(crate) fn mapped(ip: IpAddr) -> std::net::Ipv6Addr {
    match unmap(ip) {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// One list compiled for matching, changed in place as entries come and go.
#[derive(Default)]
struct Matcher {
    /// Networks, host bits cleared. A lookup tries each prefix length listed, longest first.
    networks: HashSet<IpNet>,
    /// How many networks are listed at each prefix length, v4 and v6 apart.
    v4_prefixes: Vec<u32>,
    v6_prefixes: Vec<u32>,
    /// Whole domains, and the suffixes listed as `*.suffix`.
    domains: HashSet<String>,
    under: HashSet<String>,
    emails: HashSet<String>,
}

impl Matcher {
    /// Adds (`add`) or removes an entry's value.
    fn change(&mut self, entry: &ListEntry, add: bool) {
        let set = match entry.kind {
            EntryKind::Ip => {
                let Some(net) = parse_network(&entry.value) else {
                    return;
                };
                let changed = if add {
                    self.networks.insert(net)
                } else {
                    self.networks.remove(&net)
                };
                if changed {
                    let (counts, len) = match net {
                        IpNet::V4(v4) => (&mut self.v4_prefixes, v4.prefix_len()),
                        IpNet::V6(v6) => (&mut self.v6_prefixes, v6.prefix_len()),
                    };
                    counts.resize(counts.len().max(usize::from(len) + 1), 0);
                    let count = &mut counts[usize::from(len)];
                    *count = if add { *count + 1 } else { *count - 1 };
                }
                return;
            }
            EntryKind::EmailDomain => match entry.value.strip_prefix("*.") {
                Some(suffix) => return set_change(&mut self.under, suffix, add),
                None => &mut self.domains,
            },
            EntryKind::Email => &mut self.emails,
        };
        set_change(set, &entry.value, add);
    }

    fn is_empty(&self) -> bool {
        self.networks.is_empty()
            && self.domains.is_empty()
            && self.under.is_empty()
            && self.emails.is_empty()
    }

    fn has_networks(&self) -> bool {
        !self.networks.is_empty()
    }

    fn matches_ip(&self, ip: IpAddr) -> bool {
        let ip = unmap(ip);
        let counts = match ip {
            IpAddr::V4(_) => &self.v4_prefixes,
            IpAddr::V6(_) => &self.v6_prefixes,
        };
        (0..counts.len())
            .rev()
            .filter(|&len| counts[len] > 0)
            .any(|len| {
                IpNet::new(ip, len as u8)
                    .map(|net| self.networks.contains(&net.trunc()))
                    .unwrap_or(false)
            })
    }

    /// Whether `email` (trimmed; any case) or its domain is listed.
    fn matches_email(&self, email: &str) -> bool {
        if self.domains.is_empty() && self.under.is_empty() && self.emails.is_empty() {
            return false;
        }
        // Lower case in a buffer on the stack: no allocation per signature.
        let mut buffer = [0u8; crate::signature::EMAIL_BYTES_MAX];
        let Some(lower) = buffer.get_mut(..email.len()) else {
            return false;
        };
        lower.copy_from_slice(email.as_bytes());
        lower.make_ascii_lowercase();
        // ASCII case changes keep UTF-8 valid.
        let Ok(email) = std::str::from_utf8(lower) else {
            return false;
        };
        if self.emails.contains(email) {
            return true;
        }
        let Some((_, domain)) = email.rsplit_once('@') else {
            return false;
        };
        if self.domains.contains(domain) {
            return true;
        }
        // Every proper suffix after a dot: a.b.example.org → b.example.org, example.org, org.
        let mut rest = domain;
        while let Some((_, suffix)) = rest.split_once('.') {
            if self.under.contains(suffix) {
                return true;
            }
            rest = suffix;
        }
        false
    }
}

fn set_change(set: &mut HashSet<String>, value: &str, add: bool) {
    if add {
        set.insert(value.to_owned());
    } else {
        set.remove(value);
    }
}

/// The lists as a caller of the engine reads them.
struct Lists {
    /// Every entry, by id.
    entries: std::collections::BTreeMap<u64, ListEntry>,
    block: Matcher,
    allow: Matcher,
}

/// The engine's lists and switches, as admission reads them.
pub(crate) struct Guards {
    lists: RwLock<Lists>,
    switches: RwLock<Switches>,
    /// Whether any block is listed, or any allow: admission looks no further when neither is.
    blocking: AtomicBool,
    allowing: AtomicBool,
    paused: AtomicBool,
    read_only: AtomicBool,
    /// The last entry id handed out (ids are never reused, even after a removal).
    last_id: AtomicU64,
}

/// The lists under their read lock, for one call's checks.
pub(crate) struct GuardRead<'a> {
    lists: Option<RwLockReadGuard<'a, Lists>>,
}

impl GuardRead<'_> {
    /// Whether a signature from `ip` with `email` is blocked.
    #[inline]
    pub fn blocks(&self, ip: Option<IpAddr>, email: &str) -> bool {
        let Some(lists) = &self.lists else {
            return false;
        };
        if lists.block.is_empty() {
            return false;
        }
        if let Some(ip) = ip.filter(|_| lists.block.has_networks()) {
            if lists.block.matches_ip(ip) {
                return true;
            }
        }
        lists.block.matches_email(email.trim())
    }

    /// Whether `ip` is on the allow list.
    #[inline]
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.lists
            .as_ref()
            .is_some_and(|lists| lists.allow.has_networks() && lists.allow.matches_ip(ip))
    }
}

impl Guards {
    pub fn new() -> Guards {
        Guards {
            lists: RwLock::new(Lists {
                entries: Default::default(),
                block: Matcher::default(),
                allow: Matcher::default(),
            }),
            switches: RwLock::new(Switches::default()),
            blocking: AtomicBool::new(false),
            allowing: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            read_only: AtomicBool::new(false),
            last_id: AtomicU64::new(0),
        }
    }

    /// Puts back what the store holds (at open).
    pub fn load(&self, entries: Vec<ListEntry>, switches: Option<Switches>, last_id: u64) {
        let last = entries.iter().map(|e| e.id).max().unwrap_or(0).max(last_id);
        self.last_id.store(last, Ordering::Release);
        for entry in entries {
            self.add(entry);
        }
        self.set_switches(switches.unwrap_or_default());
    }

    /// The lists for one call (nothing to lock when none is listed).
    #[inline]
    pub fn read(&self) -> GuardRead<'_> {
        let listed = self.blocking.load(Ordering::Acquire) || self.allowing.load(Ordering::Acquire);
        GuardRead {
            lists: listed.then(|| self.lists.read()),
        }
    }

    /// Whether `ip` is on the allow list.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let lists = self.lists.read();
        lists.allow.has_networks() && lists.allow.matches_ip(ip)
    }

    #[inline]
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    #[inline]
    pub fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::Acquire)
    }

    pub fn switches(&self) -> Switches {
        self.switches.read().clone()
    }

    pub fn set_switches(&self, switches: Switches) {
        self.paused.store(switches.paused, Ordering::Release);
        self.read_only.store(switches.read_only, Ordering::Release);
        *self.switches.write() = switches;
    }

    /// Every entry of `list`, by id.
    pub fn entries(&self, list: ListName) -> Vec<ListEntry> {
        self.lists
            .read()
            .entries
            .values()
            .filter(|e| e.list == list)
            .cloned()
            .collect()
    }

    pub fn entry(&self, id: u64) -> Option<ListEntry> {
        self.lists.read().entries.get(&id).cloned()
    }

    /// The entry of `list` with this kind and value, if listed.
    pub fn find(&self, list: ListName, kind: EntryKind, value: &str) -> Option<u64> {
        self.lists
            .read()
            .entries
            .values()
            .find(|e| e.list == list && e.kind == kind && e.value == value)
            .map(|e| e.id)
    }

    pub fn len(&self) -> usize {
        self.lists.read().entries.len()
    }

    /// The id the next entry gets.
    pub fn next_id(&self) -> u64 {
        self.last_id.load(Ordering::Acquire) + 1
    }

    /// Puts `entry` on its list.
    pub fn add(&self, entry: ListEntry) {
        let mut lists = self.lists.write();
        self.last_id.fetch_max(entry.id, Ordering::AcqRel);
        lists.matcher(entry.list).change(&entry, true);
        lists.entries.insert(entry.id, entry);
        self.note_listed(&lists);
    }

    /// Takes entry `id` off its list.
    pub fn remove(&self, id: u64) {
        let mut lists = self.lists.write();
        if let Some(entry) = lists.entries.remove(&id) {
            lists.matcher(entry.list).change(&entry, false);
        }
        self.note_listed(&lists);
    }

    fn note_listed(&self, lists: &Lists) {
        self.blocking
            .store(!lists.block.is_empty(), Ordering::Release);
        self.allowing
            .store(!lists.allow.is_empty(), Ordering::Release);
    }
}

impl Lists {
    fn matcher(&mut self, list: ListName) -> &mut Matcher {
        match list {
            ListName::Block => &mut self.block,
            ListName::Allow => &mut self.allow,
        }
    }
}

/// A change the writer persists, then applies.
#[derive(Debug, Clone)]
pub(crate) enum GuardChange {
    Add(ListEntry),
    Remove(u64),
    Switches(Switches),
    /// Pause (`Some`: who and when) or resume (`None`) the petition numbered so.
    Pause(u32, Option<Change>),
}

/// Puts a change in effect (after the writer persisted it, or at once in memory mode).
pub(crate) fn apply(shared: &crate::shared::Shared, change: GuardChange) {
    match change {
        GuardChange::Add(entry) => shared.guards().add(entry),
        GuardChange::Remove(id) => shared.guards().remove(id),
        GuardChange::Switches(switches) => shared.guards().set_switches(switches),
        GuardChange::Pause(num, by) => {
            if let Some(petition) = shared.registry().by_num(num) {
                petition.set_paused(by);
            }
        }
    }
}

/// Keys of the `guards` column family: a tag, then a number.
pub(crate) const KEY_ENTRY: u8 = b'e';
pub(crate) const KEY_SWITCHES: u8 = b's';
pub(crate) const KEY_PAUSED: u8 = b'p';
/// The last entry id handed out (u64, little-endian), written with each entry added.
pub(crate) const KEY_LAST_ID: u8 = b'n';

const VERSION: u8 = 1;

pub(crate) fn entry_key(id: u64) -> [u8; 9] {
    let mut key = [KEY_ENTRY; 9];
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

pub(crate) fn paused_key(num: u32) -> [u8; 5] {
    let mut key = [KEY_PAUSED; 5];
    key[1..].copy_from_slice(&num.to_be_bytes());
    key
}

fn corrupt(what: &'static str) -> StoreError {
    StoreError::Corrupt { what }
}

fn encode_change(change: &Change, out: &mut Vec<u8>) {
    out.extend_from_slice(&change.at_ms.to_le_bytes());
    out.push(change.by.len() as u8);
    out.extend_from_slice(change.by.as_bytes());
}

fn decode_change(bytes: &[u8]) -> Result<(Change, &[u8]), StoreError> {
    let at = bytes.get(..8).ok_or(corrupt("guard change"))?;
    let len = usize::from(*bytes.get(8).ok_or(corrupt("guard change"))?);
    let by = bytes.get(9..9 + len).ok_or(corrupt("guard change"))?;
    let change = Change {
        at_ms: u64::from_le_bytes(at.try_into().map_err(|_| corrupt("guard change"))?),
        by: String::from_utf8(by.to_vec()).map_err(|_| corrupt("guard change"))?,
    };
    Ok((change, &bytes[9 + len..]))
}

impl ListEntry {
    /// The stored form: version, list, kind, the change, then the value.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION, self.list.to_byte(), self.kind.to_byte()];
        encode_change(&self.added, &mut out);
        out.extend_from_slice(self.value.as_bytes());
        out
    }

    pub(crate) fn decode(id: u64, bytes: &[u8]) -> Result<ListEntry, StoreError> {
        let [VERSION, list, kind, rest @ ..] = bytes else {
            return Err(corrupt("list entry"));
        };
        let (added, value) = decode_change(rest)?;
        Ok(ListEntry {
            id,
            list: ListName::from_byte(*list).ok_or(corrupt("list entry"))?,
            kind: EntryKind::from_byte(*kind).ok_or(corrupt("list entry"))?,
            value: String::from_utf8(value.to_vec()).map_err(|_| corrupt("list entry"))?,
            added,
        })
    }
}

impl Switches {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let flags = u8::from(self.paused) | u8::from(self.read_only) << 1;
        let mut out = vec![VERSION, flags];
        if let Some(change) = &self.changed {
            encode_change(change, &mut out);
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Switches, StoreError> {
        let [VERSION, flags, rest @ ..] = bytes else {
            return Err(corrupt("switches"));
        };
        Ok(Switches {
            paused: flags & 1 != 0,
            read_only: flags & 2 != 0,
            changed: if rest.is_empty() {
                None
            } else {
                Some(decode_change(rest)?.0)
            },
        })
    }
}

pub(crate) fn encode_pause(change: &Change) -> Vec<u8> {
    let mut out = vec![VERSION];
    encode_change(change, &mut out);
    out
}

pub(crate) fn decode_pause(bytes: &[u8]) -> Result<Change, StoreError> {
    let [VERSION, rest @ ..] = bytes else {
        return Err(corrupt("pause"));
    };
    Ok(decode_change(rest)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().expect("an address"))
    }

    fn spec(list: ListName, kind: EntryKind, value: &str) -> EntrySpec {
        EntrySpec {
            list,
            kind,
            value: value.to_owned(),
            by: "admin:0123abcd".to_owned(),
        }
    }

    fn listed(entries: &[(EntryKind, &str)]) -> Guards {
        let guards = Guards::new();
        for (at, &(kind, value)) in entries.iter().enumerate() {
            let value = spec(ListName::Block, kind, value)
                .normalized()
                .expect("valid");
            guards.add(ListEntry {
                id: at as u64 + 1,
                list: ListName::Block,
                kind,
                value,
                added: Change {
                    by: "t".into(),
                    at_ms: 0,
                },
            });
        }
        guards
    }

    #[test]
    fn networks_match_at_their_edges_v4_v6_and_mapped() {
        let guards = listed(&[
            (EntryKind::Ip, "192.0.2.0/24"),
            (EntryKind::Ip, "198.51.100.7"),
            (EntryKind::Ip, "2001:db8::/32"),
            (EntryKind::Ip, "::ffff:203.0.113.0/120"),
        ]);
        let read = guards.read();
        let blocked = |text: &str| read.blocks(ip(text), "a@example.org");
        assert!(blocked("192.0.2.0") && blocked("192.0.2.255"));
        assert!(!blocked("192.0.1.255") && !blocked("192.0.3.0"));
        assert!(blocked("198.51.100.7") && !blocked("198.51.100.8"));
        assert!(blocked("2001:db8::1") && blocked("2001:db8:ffff:ffff::"));
        assert!(!blocked("2001:db9::") && !blocked("2001:db7:ffff::"));
        // Mapped either way: the entry was written mapped, the signer is plain v4, and back.
        assert!(blocked("203.0.113.9") && !blocked("203.0.114.0"));
        assert!(blocked("::ffff:192.0.2.10") && blocked("::ffff:198.51.100.7"));
        assert!(
            !blocked("::192.0.2.10"),
            "an IPv4-compatible address is not mapped"
        );
        assert!(!read.blocks(None, "a@example.org"));
    }

    #[test]
    fn whole_address_spaces_and_single_hosts() {
        let all_v4 = listed(&[(EntryKind::Ip, "0.0.0.0/0")]);
        assert!(all_v4.read().blocks(ip("8.8.8.8"), "a@b.org"));
        assert!(all_v4.read().blocks(ip("::ffff:8.8.8.8"), "a@b.org"));
        assert!(!all_v4.read().blocks(ip("2001:db8::1"), "a@b.org"));
        let all_v6 = listed(&[(EntryKind::Ip, "::/0")]);
        assert!(all_v6.read().blocks(ip("2001:db8::1"), "a@b.org"));
        assert!(!all_v6.read().blocks(ip("8.8.8.8"), "a@b.org"));
        let host = listed(&[
            (EntryKind::Ip, "2001:db8::5/128"),
            (EntryKind::Ip, "10.0.0.1/32"),
        ]);
        assert!(host.read().blocks(ip("2001:db8::5"), "a@b.org"));
        assert!(!host.read().blocks(ip("2001:db8::4"), "a@b.org"));
        assert!(host.read().blocks(ip("10.0.0.1"), "a@b.org"));
        assert!(!host.read().blocks(ip("10.0.0.0"), "a@b.org"));
    }

    #[test]
    fn domains_globs_and_emails_match_in_any_case() {
        let guards = listed(&[
            (EntryKind::EmailDomain, "Spam.Example"),
            (EntryKind::EmailDomain, "*.throwaway.test"),
            (EntryKind::Email, "Bot@Example.org"),
        ]);
        let read = guards.read();
        assert!(read.blocks(None, "x@spam.example"));
        assert!(read.blocks(None, "x@SPAM.EXAMPLE"));
        assert!(
            !read.blocks(None, "x@a.spam.example"),
            "a whole domain is that domain only"
        );
        assert!(read.blocks(None, "x@a.throwaway.test"));
        assert!(read.blocks(None, "x@a.b.THROWAWAY.test"));
        assert!(
            !read.blocks(None, "x@throwaway.test"),
            "*. is every domain under, not itself"
        );
        assert!(!read.blocks(None, "x@notthrowaway.test"));
        assert!(read.blocks(None, " bot@example.org "));
        assert!(read.blocks(None, "BOT@EXAMPLE.ORG"));
        assert!(!read.blocks(None, "bot2@example.org"));
    }

    #[test]
    fn invalid_entries_are_refused_naming_the_field() {
        let refused =
            |list, kind, value: &str| spec(list, kind, value).normalized().expect_err("refused");
        for value in [
            "",
            "300.1.1.1",
            "192.0.2.0/33",
            "2001:db8::/129",
            "example.org",
        ] {
            assert!(matches!(
                refused(ListName::Block, EntryKind::Ip, value),
                GuardError::Invalid { field: "value", .. }
            ));
        }
        for value in [
            "*", "*.", "a..b", "-a.org", "a_b.org", "**.a.org", "a.org/x",
        ] {
            assert!(matches!(
                refused(ListName::Block, EntryKind::EmailDomain, value),
                GuardError::Invalid { field: "value", .. }
            ));
        }
        for value in ["@a.org", "a@", "a b@c.org", "plain"] {
            assert!(matches!(
                refused(ListName::Block, EntryKind::Email, value),
                GuardError::Invalid { field: "value", .. }
            ));
        }
        assert!(matches!(
            refused(ListName::Allow, EntryKind::Email, "a@b.org"),
            GuardError::Invalid { field: "kind", .. }
        ));
        let mut bad_by = spec(ListName::Block, EntryKind::Ip, "192.0.2.1");
        bad_by.by = "two words".into();
        assert!(matches!(
            bad_by.normalized(),
            Err(GuardError::Invalid { field: "by", .. })
        ));
        // Normal forms: host bits cleared, a mapped network as IPv4, lower case.
        let normal = |kind, value: &str| spec(ListName::Block, kind, value).normalized();
        assert_eq!(
            normal(EntryKind::Ip, "192.0.2.77/24").as_deref(),
            Ok("192.0.2.0/24")
        );
        assert_eq!(
            normal(EntryKind::Ip, "::ffff:192.0.2.1").as_deref(),
            Ok("192.0.2.1/32")
        );
        assert_eq!(
            normal(EntryKind::EmailDomain, "*.Example.ORG").as_deref(),
            Ok("*.example.org")
        );
    }

    #[test]
    fn records_round_trip() {
        let entry = ListEntry {
            id: 7,
            list: ListName::Allow,
            kind: EntryKind::Ip,
            value: "2001:db8::/48".into(),
            added: Change {
                by: "admin:0123abcd".into(),
                at_ms: 1_700_000_000_123,
            },
        };
        assert_eq!(
            ListEntry::decode(7, &entry.encode()).expect("decodes"),
            entry
        );
        let switches = Switches {
            paused: true,
            read_only: false,
            changed: Some(entry.added.clone()),
        };
        assert_eq!(
            Switches::decode(&switches.encode()).expect("decodes"),
            switches
        );
        assert_eq!(
            Switches::decode(&Switches::default().encode()).expect("decodes"),
            Switches::default()
        );
        assert_eq!(
            decode_pause(&encode_pause(&entry.added)).expect("decodes"),
            entry.added
        );
        assert!(ListEntry::decode(7, &[9, 0, 0]).is_err());
    }

    #[test]
    fn removing_the_last_block_stops_the_checks() {
        let guards = listed(&[(EntryKind::Email, "a@b.org")]);
        assert!(guards.read().blocks(None, "a@b.org"));
        guards.remove(1);
        assert!(!guards.read().blocks(None, "a@b.org"));
        assert!(guards.read().lists.is_none());
    }
}
