/*
 * SPDX-License-Identifier: BSD-2-Clause
 */

#include "aqm-llm-queue-disc.h"

#include "ns3/drop-tail-queue.h"
#include "ns3/log.h"
#include "ns3/simulator.h"
#include "ns3/uinteger.h"

namespace ns3
{

NS_LOG_COMPONENT_DEFINE("AqmLlmQueueDisc");
NS_OBJECT_ENSURE_REGISTERED(AqmLlmQueueDisc);

// Simulated time starts at 0; the core's clock starts one second later so
// that no timestamp is ever 0 (the core uses 0 for "queue empty").
static const uint64_t kClockOffsetNs = 1000000000ull;

TypeId
AqmLlmQueueDisc::GetTypeId()
{
    static TypeId tid =
        TypeId("ns3::AqmLlmQueueDisc")
            .SetParent<QueueDisc>()
            .SetGroupName("TrafficControl")
            .AddConstructor<AqmLlmQueueDisc>()
            .AddAttribute("Seed",
                          "Seed of the core's marking rolls",
                          UintegerValue(1),
                          MakeUintegerAccessor(&AqmLlmQueueDisc::m_seed),
                          MakeUintegerChecker<uint32_t>())
            .AddAttribute("StepThresholdUs",
                          "L queue step marking threshold (us)",
                          UintegerValue(1000),
                          MakeUintegerAccessor(&AqmLlmQueueDisc::m_stepThreshUs),
                          MakeUintegerChecker<uint32_t>(1, 1000000))
            .AddAttribute("TargetUs",
                          "PI target delay (us)",
                          UintegerValue(15000),
                          MakeUintegerAccessor(&AqmLlmQueueDisc::m_targetUs),
                          MakeUintegerChecker<uint32_t>(1, 1000000));
    return tid;
}

AqmLlmQueueDisc::AqmLlmQueueDisc()
    : QueueDisc(QueueDiscSizePolicy::NO_LIMITS),
      m_coreMemory((aqm_core_size() + 7) / 8),
      m_core(reinterpret_cast<struct aqm_core*>(m_coreMemory.data())),
      m_bytesSent(0),
      m_seed(1),
      m_stepThreshUs(1000),
      m_targetUs(15000)
{
}

AqmLlmQueueDisc::~AqmLlmQueueDisc() = default;

uint64_t
AqmLlmQueueDisc::Now() const
{
    return kClockOffsetNs + static_cast<uint64_t>(Simulator::Now().GetNanoSeconds());
}

bool
AqmLlmQueueDisc::CheckConfig()
{
    if (GetNQueueDiscClasses() > 0 || GetNPacketFilters() > 0)
    {
        NS_LOG_ERROR("AqmLlmQueueDisc takes no classes and no filters");
        return false;
    }
    if (GetNInternalQueues() == 0)
    {
        // The core enforces the limits; the FIFOs only hold packets.
        for (unsigned i = 0; i < AQM_NQUEUES; i++)
        {
            AddInternalQueue(CreateObjectWithAttributes<DropTailQueue<QueueDiscItem>>(
                "MaxSize",
                QueueSizeValue(QueueSize(QueueSizeUnit::PACKETS, AQM_LIMIT_PKTS_MAX + 1))));
        }
    }
    return GetNInternalQueues() == AQM_NQUEUES;
}

void
AqmLlmQueueDisc::InitializeParams()
{
    struct aqm_params p;
    aqm_params_default(&p);
    p.step_thresh_ns = m_stepThreshUs * 1000u;
    p.target_ns = m_targetUs * 1000u;
    NS_ABORT_MSG_IF(aqm_core_init(m_core, &p, m_seed, kClockOffsetNs) != AQM_OK,
                    "AqmLlmQueueDisc: parameters refused by the core");
}

bool
AqmLlmQueueDisc::DoEnqueue(Ptr<QueueDiscItem> item)
{
    uint8_t tos = 0;
    uint8_t ecn = item->GetUint8Value(QueueItem::IP_DSFIELD, tos) ? (tos & 3) : 0;
    struct aqm_pkt pkt;
    if (aqm_enqueue(m_core, Now(), item->GetSize(), ecn, &pkt) == AQM_V_DROP)
    {
        DropBeforeEnqueue(item, "limit");
        return false;
    }
    GetInternalQueue(pkt.queue)->Enqueue(item);
    m_meta[pkt.queue].push_back(pkt);
    return true;
}

Ptr<QueueDiscItem>
AqmLlmQueueDisc::DoDequeue()
{
    for (;;)
    {
        uint64_t now = Now();
        int q = aqm_select(m_core, now);
        if (q == AQM_SELECT_NONE)
        {
            return nullptr;
        }
        Ptr<QueueDiscItem> item = GetInternalQueue(q)->Dequeue();
        struct aqm_pkt pkt = m_meta[q].front();
        m_meta[q].pop_front();
        uint64_t nextTs = m_meta[q].empty() ? 0 : m_meta[q].front().ts_ns;
        struct aqm_decision d;
        aqm_dequeue(m_core, now, &pkt, nextTs, &d);
        if (d.verdict == AQM_V_DROP)
        {
            DropAfterDequeue(item, d.source == AQM_SRC_MODEL ? "model" : "dualpi2");
            continue;
        }
        if (d.verdict == AQM_V_MARK)
        {
            Mark(item, d.source == AQM_SRC_MODEL ? "model" : "dualpi2");
        }
        m_sojourn[q].push_back(now - pkt.ts_ns);
        m_bytesSent += item->GetSize();
        return item;
    }
}

const std::vector<uint64_t>&
AqmLlmQueueDisc::Sojourns(unsigned queue) const
{
    return m_sojourn[queue & 1];
}

struct aqm_counters
AqmLlmQueueDisc::Counters() const
{
    struct aqm_counters c;
    aqm_counters_get(m_core, &c);
    return c;
}

double
AqmLlmQueueDisc::ProbBase() const
{
    return aqm_prob_base(m_core) / 4294967295.0;
}

uint64_t
AqmLlmQueueDisc::BytesSent() const
{
    return m_bytesSent;
}

} // namespace ns3
