/// The life of one server connection, with no NIO in it: the handler tells
/// it what happened and does what it answers. Kept apart so that every rule
/// (call ids, back-pressure, the drain handshake, idle detection, protocol
/// errors) can be tested by feeding it events, with no channel, clock or
/// sleep (`ServerConnectionStateMachineTests`).
///
/// `Call` is whatever the handler keeps per call in flight (its task, its
/// deadline timer); the machine only stores and returns it.
package struct ServerConnectionStateMachine<Call> {
    package enum State: Equatable, Sendable {
        case awaitingPreface
        case open
        /// GOAWAY sent (or received); waiting for the PING that follows our
        /// GOAWAY to come back (then every request the peer sent before
        /// seeing it has arrived) and for the calls in flight to finish.
        case draining(pingAcknowledged: Bool)
        case closed
    }

    package private(set) var state = State.awaitingPreface
    package private(set) var calls: [UInt32: Call] = [:]
    /// The highest call id received: GOAWAY promises to answer up to it.
    package private(set) var lastCallID: UInt32 = 0
    package let maxConcurrentCalls: Int
    private var sawRequestBytes = false
    private var quietChecks = 0

    package init(maxConcurrentCalls: Int) {
        self.maxConcurrentCalls = maxConcurrentCalls
    }

    package var isClosed: Bool { state == .closed }

    // MARK: Reading

    /// Bytes arrived: the connection is not idle.
    package mutating func receivedBytes() {
        sawRequestBytes = true
    }

    /// Whether to read more now: not while the calls in flight are at the
    /// cap, nor while the peer is not reading its responses.
    package func mayRead(isWritable: Bool) -> Bool {
        calls.count < maxConcurrentCalls && isWritable
    }

    /// The peer's preface arrived; the handler answers with its own.
    package mutating func receivedPreface() {
        if state == .awaitingPreface { state = .open }
    }

    // MARK: Calls

    package enum RequestAction: Equatable, Sendable {
        /// Route and run it, then `callStarted` (async) or nothing (inline).
        case run
        /// Answer UNAVAILABLE, not processed: the connection is draining.
        case refuseDraining
        /// The peer broke the protocol: close the connection (`protocolViolation`).
        case violation(String)
    }

    package mutating func receivedRequest(callID: UInt32) -> RequestAction {
        guard callID != 0 else { return .violation("REQUEST with call id 0") }
        guard calls[callID] == nil else { return .violation("REQUEST reuses call id \(callID), which is still in flight") }
        lastCallID = max(lastCallID, callID)
        if case .draining = state { return .refuseDraining }
        return .run
    }

    /// An async call is running.
    package mutating func callStarted(_ callID: UInt32, _ call: Call) {
        calls[callID] = call
    }

    /// A call was answered, expired or cancelled. Returns its record (nil if
    /// it had already ended: a late answer or a second cancel does nothing)
    /// and whether the connection is now drained and should close.
    package mutating func callEnded(_ callID: UInt32) -> (call: Call?, close: Bool) {
        guard let call = calls.removeValue(forKey: callID) else { return (nil, false) }
        return (call, closeIfDrained())
    }

    // MARK: Draining

    package enum DrainAction: Equatable, Sendable {
        /// Nothing was said yet: close at once.
        case close
        /// Send GOAWAY(lastCallID) and the drain PING, and arm the drain timer.
        case sendGoAwayAndPing(lastCallID: UInt32)
        /// Already draining or closed.
        case none
    }

    /// The server is shutting down, or the connection was idle too long.
    package mutating func startDraining() -> DrainAction {
        switch state {
        case .awaitingPreface:
            state = .closed
            return .close
        case .open:
            state = .draining(pingAcknowledged: false)
            return .sendGoAwayAndPing(lastCallID: lastCallID)
        case .draining, .closed:
            return .none
        }
    }

    /// The peer acknowledged the drain PING. Returns whether to close now.
    package mutating func receivedDrainPingAck() -> Bool {
        guard case .draining = state else { return false }
        state = .draining(pingAcknowledged: true)
        return closeIfDrained()
    }

    /// The client sent GOAWAY: it is leaving. Returns whether to close now.
    package mutating func receivedGoAway() -> Bool {
        if state == .open { state = .draining(pingAcknowledged: true) }
        return closeIfDrained()
    }

    /// The peer never answered the drain PING in time. Returns whether to close.
    package mutating func drainTimedOut() -> Bool {
        guard case .draining = state else { return false }
        state = .closed
        return true
    }

    private mutating func closeIfDrained() -> Bool {
        guard state == .draining(pingAcknowledged: true), calls.isEmpty else { return false }
        state = .closed
        return true
    }

    // MARK: Idle

    package enum IdleAction: Equatable, Sendable {
        case checkAgain
        /// Two quiet checks in a row with nothing in flight: drain.
        case drain
        /// Draining or closed: stop checking.
        case stop
    }

    /// The idle timer fired (every half idle period).
    package mutating func idleCheck() -> IdleAction {
        switch state {
        case .awaitingPreface, .open: break
        case .draining, .closed: return .stop
        }
        if sawRequestBytes || !calls.isEmpty {
            sawRequestBytes = false
            quietChecks = 0
            return .checkAgain
        }
        quietChecks += 1
        return quietChecks >= 2 ? .drain : .checkAgain
    }

    // MARK: Errors and close

    package enum ViolationAction: Equatable, Sendable {
        /// Already closed: nothing to say.
        case none
        /// Send GOAWAY with the error (after a preface of our own if the
        /// peer never got one, so it still reads a proper answer), then close.
        case sendGoAway(prefaceFirst: Bool, lastCallID: UInt32)
    }

    package mutating func protocolViolation() -> ViolationAction {
        let wasAwaitingPreface = state == .awaitingPreface
        guard state != .closed else { return .none }
        state = .closed
        return .sendGoAway(prefaceFirst: wasAwaitingPreface, lastCallID: lastCallID)
    }

    /// The connection closed (or failed): the calls in flight, to cancel.
    package mutating func closed() -> [Call] {
        state = .closed
        let inFlight = Array(calls.values)
        calls.removeAll()
        return inFlight
    }
}
