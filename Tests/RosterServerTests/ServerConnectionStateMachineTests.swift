import RosterServer
import TestServices
import XCTest

/// The connection's rules, fed events directly: no channel, clock or sleep.
final class ServerConnectionStateMachineTests: XCTestCase {
    typealias Machine = ServerConnectionStateMachine<String>

    private func open(max: Int = 2) -> Machine {
        var machine = Machine(maxConcurrentCalls: max)
        machine.receivedPreface()
        XCTAssertEqual(machine.state, .open)
        return machine
    }

    func testCallIDsMustBeNewAndNonZero() {
        var machine = open()
        XCTAssertEqual(machine.receivedRequest(callID: 0), .violation("REQUEST with call id 0"))
        XCTAssertEqual(machine.receivedRequest(callID: 5), .run)
        machine.callStarted(5, "five")
        XCTAssertEqual(machine.receivedRequest(callID: 5), .violation("REQUEST reuses call id 5, which is still in flight"))
        XCTAssertEqual(machine.callEnded(5).call, "five")
        XCTAssertNil(machine.callEnded(5).call, "a second end (a late answer after a cancel) does nothing")
        XCTAssertEqual(machine.receivedRequest(callID: 5), .run, "an id may be used again once its call ended")
        XCTAssertEqual(machine.lastCallID, 5)
    }

    func testReadingPausesAtTheCapOrWhenThePeerDoesNotRead() {
        var machine = open(max: 2)
        XCTAssertTrue(machine.mayRead(isWritable: true))
        XCTAssertFalse(machine.mayRead(isWritable: false))
        for id in [1, 3] as [UInt32] {
            _ = machine.receivedRequest(callID: id)
            machine.callStarted(id, "\(id)")
        }
        XCTAssertFalse(machine.mayRead(isWritable: true))
        _ = machine.callEnded(1)
        XCTAssertTrue(machine.mayRead(isWritable: true))
    }

    /// GOAWAY then PING: the connection closes once the PING is back and the
    /// last call in flight has ended, not before; requests in between are
    /// refused as not processed.
    func testDrainWaitsForThePingAndTheCallsInFlight() {
        var machine = open()
        _ = machine.receivedRequest(callID: 7)
        machine.callStarted(7, "seven")
        XCTAssertEqual(machine.startDraining(), .sendGoAwayAndPing(lastCallID: 7))
        XCTAssertEqual(machine.startDraining(), .none, "drained once")
        XCTAssertEqual(machine.receivedRequest(callID: 9), .refuseDraining)
        XCTAssertFalse(machine.receivedDrainPingAck(), "a call is still in flight")
        XCTAssertEqual(machine.state, .draining(pingAcknowledged: true))
        XCTAssertTrue(machine.callEnded(7).close)
        XCTAssertTrue(machine.isClosed)
    }

    func testADrainWhoseCallsEndBeforeThePingClosesOnThePing() {
        var machine = open()
        _ = machine.startDraining()
        XCTAssertTrue(machine.receivedDrainPingAck())
        XCTAssertTrue(machine.isClosed)
    }

    func testAPeerThatNeverAnswersThePingIsClosedAtTheDrainTimeout() {
        var machine = open()
        XCTAssertFalse(machine.drainTimedOut(), "not draining")
        _ = machine.startDraining()
        XCTAssertTrue(machine.drainTimedOut())
        XCTAssertTrue(machine.isClosed)
    }

    func testDrainingBeforeThePrefaceClosesAtOnce() {
        var machine = Machine(maxConcurrentCalls: 1)
        XCTAssertEqual(machine.startDraining(), .close)
        XCTAssertTrue(machine.isClosed)
    }

    func testAClientGoAwayClosesOnceItsCallsEnd() {
        var machine = open()
        _ = machine.receivedRequest(callID: 1)
        machine.callStarted(1, "one")
        XCTAssertFalse(machine.receivedGoAway())
        XCTAssertTrue(machine.callEnded(1).close)
    }

    /// Two quiet checks in a row with nothing in flight drain the
    /// connection; bytes or a call in flight reset the count.
    func testIdleNeedsTwoQuietChecksWithNothingInFlight() {
        var machine = open()
        XCTAssertEqual(machine.idleCheck(), .checkAgain)
        machine.receivedBytes()
        XCTAssertEqual(machine.idleCheck(), .checkAgain, "bytes arrived: not quiet")
        XCTAssertEqual(machine.idleCheck(), .checkAgain, "one quiet check")
        _ = machine.receivedRequest(callID: 1)
        machine.callStarted(1, "long")
        XCTAssertEqual(machine.idleCheck(), .checkAgain, "a call in flight is not idle")
        XCTAssertEqual(machine.idleCheck(), .checkAgain)
        _ = machine.callEnded(1)
        XCTAssertEqual(machine.idleCheck(), .checkAgain)
        XCTAssertEqual(machine.idleCheck(), .drain)
        _ = machine.startDraining()
        XCTAssertEqual(machine.idleCheck(), .stop)
    }

    func testAProtocolViolationIsAnsweredOnceWithAPrefaceIfNoneWasSent() {
        var fresh = Machine(maxConcurrentCalls: 1)
        XCTAssertEqual(fresh.protocolViolation(), .sendGoAway(prefaceFirst: true, lastCallID: 0))
        XCTAssertEqual(fresh.protocolViolation(), .none)
        var machine = open()
        _ = machine.receivedRequest(callID: 4)
        XCTAssertEqual(machine.protocolViolation(), .sendGoAway(prefaceFirst: false, lastCallID: 4))
    }

    func testClosingHandsBackTheCallsToCancel() {
        var machine = open()
        for id in [1, 2] as [UInt32] {
            _ = machine.receivedRequest(callID: id)
            machine.callStarted(id, "\(id)")
        }
        XCTAssertEqual(Set(machine.closed()), ["1", "2"])
        XCTAssertTrue(machine.calls.isEmpty)
        XCTAssertTrue(machine.isClosed)
    }
}
