/*
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * AqmLlmQueueDisc: the AQM-LLM core (kmod/core, the same C as the FreeBSD
 * module) as an ns-3 queue disc. Two internal FIFOs, L and C; the core
 * classifies, schedules and decides; marks go through QueueDisc::Mark.
 */

#ifndef AQM_LLM_QUEUE_DISC_H
#define AQM_LLM_QUEUE_DISC_H

#include "behaviour-policy.h"

#include "ns3/queue-disc.h"

#include <cstdint>
#include <cstdio>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

extern "C" {
#include "aqm_core.h"
}

namespace ns3
{

class AqmLlmQueueDisc : public QueueDisc
{
  public:
    static TypeId GetTypeId();
    AqmLlmQueueDisc();
    ~AqmLlmQueueDisc() override;

    /// Sojourn of every packet sent, per queue (AQM_QUEUE_C, AQM_QUEUE_L), in ns.
    const std::vector<uint64_t>& Sojourns(unsigned queue) const;
    /// The core's counters.
    struct aqm_counters Counters() const;
    double ProbBase() const;
    uint64_t BytesSent() const;

  private:
    void DoDispose() override;
    void OpenChannel();
    void WaitForVerdict(uint64_t seq);
    void AttachPrivateRegion();
    void ConsumePrivateStates();
    void Record(const struct aqm_pkt& pkt, const struct aqm_decision& d, uint64_t now);
    bool DoEnqueue(Ptr<QueueDiscItem> item) override;
    Ptr<QueueDiscItem> DoDequeue() override;
    bool CheckConfig() override;
    void InitializeParams() override;
    uint64_t Now() const;

    std::vector<uint64_t> m_coreMemory; ///< struct aqm_core, 8-byte aligned
    struct aqm_core* m_core;
    std::deque<struct aqm_pkt> m_meta[AQM_NQUEUES];
    std::vector<uint64_t> m_sojourn[AQM_NQUEUES];
    uint64_t m_bytesSent;
    uint32_t m_seed;
    uint32_t m_stepThreshUs;
    uint32_t m_stepThreshPkts;
    uint32_t m_minQlenStep;
    uint32_t m_harmBudgetPct;
    uint32_t m_targetUs;
    uint32_t m_piGainPct;
    uint32_t m_verdictGuard;
    // The llm policy: a channel region in POSIX shared memory served by aqmllmd.
    std::string m_channel;          ///< shm name; empty: DualPI2 alone
    uint32_t m_inferenceLatencyUs;  ///< verdicts apply to packets older than this
    uint32_t m_verdictTimeoutMs;    ///< wall-clock wait for one verdict
    uint32_t m_consumerWaitS;       ///< wall-clock wait for aqmllmd to attach
    uint64_t m_clockOffsetNs;
    void* m_region;
    uint64_t m_regionSize;
    uint64_t m_verdictTimeouts;
    // Recording: without aqmllmd, the queue disc reads its own state ring.
    std::string m_recordPath;
    FILE* m_record;
    std::vector<uint64_t> m_privateRegion;
    struct aqm_chan m_recordChan;
    std::unordered_map<uint64_t, struct aqm_state_rec> m_pending;
    uint64_t m_recorded;
    bool m_privateAttached;         ///< m_privateRegion attached to the core
    std::string m_behaviourName;    ///< dualpi2 | pie | explore
    double m_exploreRate;
    std::unique_ptr<BehaviourPolicy> m_behaviour;

  public:
    uint64_t Recorded() const
    {
        return m_recorded;
    }
    uint64_t VerdictTimeouts() const
    {
        return m_verdictTimeouts;
    }
};

} // namespace ns3

#endif /* AQM_LLM_QUEUE_DISC_H */
