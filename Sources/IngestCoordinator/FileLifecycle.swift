import RosterAPI

/// The life of one file version, owned by the coordinator and recorded in
/// the catalog's `files.state`: every change of state is one of these
/// events, allowed only from the states listed here.
///
/// ```
///  queued ─started─▶ parsing ─parsed─▶ merging ─merged─▶ publishing ─published─▶ live ─retired─▶ retired
///                      ▲  └─────────merged (a one-block file)──────▶            │  ▲──restored──┘ (a rollback; its segments kept)
///                      └──runsLost── merging                                      └─damaged─▶ failed (rebuilt as a new version)
///  parsing, merging ─shrank─▶ held ─approved─▶ publishing   (the shrink guard: far fewer keys than the live version)
///  queued, parsing, merging, publishing ─superseded / failed─▶ superseded / failed   (held: superseded only)
///  parsing, merging ─rejected─▶ rejected (too many invalid lines)
/// ```
///
/// The catalog applies an event with one statement whose `WHERE` lists the
/// allowed source states (`FileLifecycle.sources`), so a late or repeated
/// event (a report after the version was superseded, a second publish)
/// changes nothing.
public enum FileLifecycle {
    public enum Event: CaseIterable, Sendable {
        /// The first task was leased.
        case started
        /// Every block is parsed: merges are created (or exist already).
        case parsed
        /// A merge found runs lost: their blocks are parsed again.
        case runsLost
        /// Every merge is done (or the one whole-file task is): ready to publish.
        case merged
        /// The match server serves it.
        case published
        /// A newer version of the advertiser went live.
        case retired
        /// A newer file replaced it, or its file changed or vanished, before it went live.
        case superseded
        /// A task failed too often, or the match server refused it.
        case failed
        /// Too many invalid lines.
        case rejected
        /// The match server found it damaged while live; it is rebuilt as a new version.
        case damaged
        /// Merged with no keys, or far fewer than the live version: held
        /// for an operator's approval instead of published (the shrink guard).
        case shrank
        /// An operator approved a held version: it is published.
        case approved
        /// A rollback made it live again (its segments were kept).
        case restored
    }

    /// The state `event` leads to.
    public static func target(of event: Event) -> FileState {
        switch event {
        case .started: .parsing
        case .parsed: .merging
        case .runsLost: .parsing
        case .merged, .approved: .publishing
        case .shrank: .held
        case .published, .restored: .live
        case .retired: .retired
        case .superseded: .superseded
        case .failed, .damaged: .failed
        case .rejected: .rejected
        }
    }

    /// The states `event` may happen in.
    public static func sources(of event: Event) -> [FileState] {
        switch event {
        case .started: [.queued]
        case .parsed: [.parsing]
        case .runsLost: [.merging]
        case .merged: [.parsing, .merging]
        case .published: [.publishing]
        case .retired: [.live]
        case .superseded: [.queued, .parsing, .merging, .held, .publishing]
        case .failed: [.queued, .parsing, .merging, .publishing]
        case .shrank: [.parsing, .merging]
        case .approved: [.held]
        case .rejected: [.parsing, .merging]
        case .damaged: [.live]
        case .restored: [.retired]
        }
    }

    /// Where a version in `state` goes on `event`, or nil if it cannot
    /// happen there (the catalog then changes nothing).
    public static func next(from state: FileState, on event: Event) -> FileState? {
        sources(of: event).contains(state) ? target(of: event) : nil
    }

    /// States a version never leaves. (A retired one may be restored by a
    /// rollback while its segments are kept.)
    public static let finalStates: [FileState] = [.superseded, .failed, .rejected]
}
