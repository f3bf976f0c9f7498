/*
 * SPDX-License-Identifier: BSD-2-Clause
 */

#include "aqm-llm-queue-disc.h"

#include "ns3/double.h"
#include "ns3/drop-tail-queue.h"
#include "ns3/log.h"
#include "ns3/simulator.h"
#include "ns3/string.h"
#include "ns3/uinteger.h"

#include <cstring>
#include <stdexcept>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

namespace ns3
{

NS_LOG_COMPONENT_DEFINE("AqmLlmQueueDisc");
NS_OBJECT_ENSURE_REGISTERED(AqmLlmQueueDisc);

// Simulated time starts at 0; the core's clock starts one second later so
// that no timestamp is ever 0 (the core uses 0 for "queue empty").
static const uint64_t kClockOffsetNs = 1000000000ull;

static uint64_t
MonotonicNs()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

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
            .AddAttribute("StepThresholdPkts",
                          "Nonzero: the L step threshold is this many L packets, "
                          "StepThresholdUs ignored (aqm_params.step_thresh_pkts)",
                          UintegerValue(0),
                          MakeUintegerAccessor(&AqmLlmQueueDisc::m_stepThreshPkts),
                          MakeUintegerChecker<uint32_t>(0, AQM_LIMIT_PKTS_MAX))
            .AddAttribute("MinQlenStep",
                          "No step mark while the L queue holds fewer packets "
                          "(aqm_params.min_qlen_step)",
                          UintegerValue(0),
                          MakeUintegerAccessor(&AqmLlmQueueDisc::m_minQlenStep),
                          MakeUintegerChecker<uint32_t>(0, AQM_LIMIT_PKTS_MAX))
            .AddAttribute("HarmBudgetPct",
                          "What model verdicts may signal beyond DualPI2's own, in % "
                          "(aqm_params.harm_budget_pct; AQM_HARM_BUDGET_OFF: no budget, "
                          "for recording behaviour policies and verdict-mechanics tests)",
                          UintegerValue(AQM_HARM_BUDGET_DEFAULT),
                          MakeUintegerAccessor(&AqmLlmQueueDisc::m_harmBudgetPct),
                          MakeUintegerChecker<uint32_t>(0, AQM_HARM_BUDGET_OFF))
            .AddAttribute("PiGainPct",
                          "Both PI gains (alpha, beta) as a percentage of the core's "
                          "defaults: a stronger or weaker classic signal",
                          UintegerValue(100),
                          MakeUintegerAccessor(&AqmLlmQueueDisc::m_piGainPct),
                          MakeUintegerChecker<uint32_t>(10, 1000))
            .AddAttribute("TargetUs",
                          "PI target delay (us)",
                          UintegerValue(15000),
                          MakeUintegerAccessor(&AqmLlmQueueDisc::m_targetUs),
                          MakeUintegerChecker<uint32_t>(1, 1000000))
            .AddAttribute("VerdictGuard",
                          "What DualPI2 still decides over a verdict (AQM_GUARD_*)",
                          UintegerValue(AQM_GUARD_DUALPI2),
                          MakeUintegerAccessor(&AqmLlmQueueDisc::m_verdictGuard),
                          MakeUintegerChecker<uint32_t>(0, AQM_GUARD_DUALPI2))
            .AddAttribute("Channel",
                          "POSIX shm name of a channel region for aqmllmd ('': none)",
                          StringValue(""),
                          MakeStringAccessor(&AqmLlmQueueDisc::m_channel),
                          MakeStringChecker())
            .AddAttribute("InferenceLatencyUs",
                          "Verdicts apply only to packets that stayed this long (us)",
                          UintegerValue(0),
                          MakeUintegerAccessor(&AqmLlmQueueDisc::m_inferenceLatencyUs),
                          MakeUintegerChecker<uint32_t>())
            .AddAttribute("VerdictTimeoutMs",
                          "Wall-clock wait for one verdict before DualPI2 decides (ms)",
                          UintegerValue(1000),
                          MakeUintegerAccessor(&AqmLlmQueueDisc::m_verdictTimeoutMs),
                          MakeUintegerChecker<uint32_t>())
            .AddAttribute("RecordPath",
                          "Write one dataset row per departing packet here ('': no)",
                          StringValue(""),
                          MakeStringAccessor(&AqmLlmQueueDisc::m_recordPath),
                          MakeStringChecker())
            .AddAttribute("Behaviour",
                          "Who decides without a channel: dualpi2, pie or explore "
                          "(behaviour-policy.h)",
                          StringValue("dualpi2"),
                          MakeStringAccessor(&AqmLlmQueueDisc::m_behaviourName),
                          MakeStringChecker())
            .AddAttribute("ExploreRate",
                          "Share of classic packets the explore behaviour decides at random",
                          DoubleValue(0.02),
                          MakeDoubleAccessor(&AqmLlmQueueDisc::m_exploreRate),
                          MakeDoubleChecker<double>(0, 1))
            .AddAttribute("ConsumerWaitS",
                          "Wall-clock wait for aqmllmd to attach (s)",
                          UintegerValue(30),
                          MakeUintegerAccessor(&AqmLlmQueueDisc::m_consumerWaitS),
                          MakeUintegerChecker<uint32_t>());
    return tid;
}

AqmLlmQueueDisc::AqmLlmQueueDisc()
    : QueueDisc(QueueDiscSizePolicy::NO_LIMITS),
      m_coreMemory((aqm_core_size() + 7) / 8),
      m_core(reinterpret_cast<struct aqm_core*>(m_coreMemory.data())),
      m_bytesSent(0),
      m_seed(1),
      m_stepThreshUs(1000),
      m_stepThreshPkts(0),
      m_minQlenStep(0),
      m_harmBudgetPct(AQM_HARM_BUDGET_DEFAULT),
      m_targetUs(15000),
      m_piGainPct(100),
      m_verdictGuard(AQM_GUARD_DUALPI2),
      m_inferenceLatencyUs(0),
      m_verdictTimeoutMs(1000),
      m_consumerWaitS(30),
      m_clockOffsetNs(kClockOffsetNs),
      m_region(nullptr),
      m_regionSize(0),
      m_verdictTimeouts(0),
      m_record(nullptr),
      m_recorded(0),
      m_privateAttached(false),
      m_behaviourName("dualpi2"),
      m_exploreRate(0.02)
{
}

AqmLlmQueueDisc::~AqmLlmQueueDisc() = default;

uint64_t
AqmLlmQueueDisc::Now() const
{
    return m_clockOffsetNs + static_cast<uint64_t>(Simulator::Now().GetNanoSeconds());
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
    p.step_thresh_pkts = m_stepThreshPkts;
    p.min_qlen_step = m_minQlenStep;
    p.harm_budget_pct = m_harmBudgetPct;
    p.target_ns = m_targetUs * 1000u;
    p.alpha_mhz = p.alpha_mhz * m_piGainPct / 100u;
    p.beta_mhz = p.beta_mhz * m_piGainPct / 100u;
    // Without aqmllmd the verdicts are a behaviour policy's (PIE, explore), and a
    // recording must hold that policy's own decisions.
    p.verdict_guard = m_channel.empty() ? AQM_GUARD_NONE : m_verdictGuard;
    if (!m_channel.empty())
    {
        // aqmllmd skips states whose deadline has passed on its own clock
        // (CLOCK_MONOTONIC); simulated time has its own pace, so put the
        // core's clock an hour ahead of the wall clock: simulated deadlines
        // are then always in the daemon's future, and timeliness is decided
        // here, by InferenceLatencyUs.
        m_clockOffsetNs = MonotonicNs() + 3600ull * 1000000000ull;
    }
    NS_ABORT_MSG_IF(aqm_core_init(m_core, &p, m_seed, m_clockOffsetNs) != AQM_OK,
                    "AqmLlmQueueDisc: parameters refused by the core");
    if (!m_channel.empty())
    {
        OpenChannel();
        if (!m_recordPath.empty())
        {
            m_record = fopen(m_recordPath.c_str(), "wb");
            NS_ABORT_MSG_IF(m_record == nullptr, "cannot write " << m_recordPath);
        }
    }
    else
    {
        try
        {
            m_behaviour = BehaviourPolicy::Create(m_behaviourName, m_exploreRate, m_seed);
        }
        catch (const std::invalid_argument& e)
        {
            NS_ABORT_MSG("AqmLlmQueueDisc: " << e.what());
        }
        if (m_behaviour || !m_recordPath.empty())
        {
            AttachPrivateRegion();
        }
        if (!m_recordPath.empty())
        {
            m_record = fopen(m_recordPath.c_str(), "wb");
            NS_ABORT_MSG_IF(m_record == nullptr, "cannot write " << m_recordPath);
        }
    }
    NS_ABORT_MSG_IF(!m_channel.empty() && m_behaviourName != "dualpi2",
                    "AqmLlmQueueDisc: a behaviour policy and a channel exclude each other");
}

// A private region, consumed right here: every packet's state record is kept
// until the packet leaves (recording), and a behaviour policy answers it with
// a verdict at once.
void
AqmLlmQueueDisc::AttachPrivateRegion()
{
    const uint32_t entries = 1024;
    uint64_t size = aqm_chan_region_size(entries, entries);
    m_privateRegion.assign((size + 7) / 8, 0);
    NS_ABORT_MSG_IF(aqm_chan_init(&m_recordChan, m_privateRegion.data(), size, entries, entries) !=
                        AQM_CHAN_OK,
                    "private region refused");
    NS_ABORT_MSG_IF(aqm_attach(m_core, m_privateRegion.data(), size, Now()) != AQM_OK,
                    "core refused the private region");
    m_privateAttached = true;
}

void
AqmLlmQueueDisc::ConsumePrivateStates()
{
    struct aqm_state_rec s;
    bool answered = false;
    while (aqm_state_pop_batch(&m_recordChan, &s, 1) == 1)
    {
        if (m_record != nullptr)
        {
            m_pending[s.seq] = s;
        }
        int action = m_behaviour ? m_behaviour->Decide(s, Now()) : BehaviourPolicy::kDualPi2;
        if (action != BehaviourPolicy::kDualPi2)
        {
            struct aqm_verdict_rec v = {s.seq, static_cast<uint32_t>(action), 0};
            answered |= aqm_verdict_push_batch(&m_recordChan, &v, 1) == 1;
        }
    }
    if (answered)
    {
        aqm_collect_verdicts(m_core);
    }
}

void
AqmLlmQueueDisc::OpenChannel()
{
    const uint32_t entries = 65536;
    std::string path = "/" + m_channel;
    m_regionSize = aqm_chan_region_size(entries, entries);
    int fd = shm_open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    NS_ABORT_MSG_IF(fd < 0, "shm_open " << path << " failed");
    NS_ABORT_MSG_IF(fchmod(fd, 0600) != 0 || ftruncate(fd, static_cast<off_t>(m_regionSize)) != 0,
                    "sizing " << path << " failed");
    m_region = mmap(nullptr, m_regionSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    NS_ABORT_MSG_IF(m_region == MAP_FAILED, "mmap " << path << " failed");
    struct aqm_chan ch;
    NS_ABORT_MSG_IF(aqm_chan_init(&ch, m_region, m_regionSize, entries, entries) != AQM_CHAN_OK,
                    "channel layout refused");
    NS_ABORT_MSG_IF(aqm_attach(m_core, m_region, m_regionSize, Now()) != AQM_OK,
                    "core refused the region");
    aqm_set_verdict_delay(m_core, static_cast<uint64_t>(m_inferenceLatencyUs) * 1000u);
    uint64_t until = MonotonicNs() + static_cast<uint64_t>(m_consumerWaitS) * 1000000000ull;
    while (!(aqm_load_acquire(&ch.hdr->flags) & AQM_CHAN_F_CONSUMER_UP) && MonotonicNs() < until)
    {
        usleep(1000);
    }
    NS_LOG_INFO("channel " << path << (aqm_load_acquire(&ch.hdr->flags) & AQM_CHAN_F_CONSUMER_UP
                                           ? ": aqmllmd attached"
                                           : ": no consumer, DualPI2 decides"));
}

// Simulated time stands still while the model thinks: the packet's verdict
// is in hand before any dequeue can see it (or DualPI2 decides after a
// wall-clock timeout).
void
AqmLlmQueueDisc::WaitForVerdict(uint64_t seq)
{
    uint64_t until = MonotonicNs() + static_cast<uint64_t>(m_verdictTimeoutMs) * 1000000ull;
    while (!aqm_verdict_ready(m_core, seq))
    {
        if (aqm_collect_verdicts(m_core) == 0)
        {
            if (MonotonicNs() > until)
            {
                m_verdictTimeouts++;
                return;
            }
            struct timespec pause = {0, 5000};
            nanosleep(&pause, nullptr);
        }
    }
}

void
AqmLlmQueueDisc::DoDispose()
{
    if (m_region != nullptr)
    {
        aqm_detach(m_core);
        munmap(m_region, m_regionSize);
        shm_unlink(("/" + m_channel).c_str());
        m_region = nullptr;
    }
    if (m_privateAttached)
    {
        aqm_detach(m_core);
        m_privateAttached = false;
    }
    if (m_record != nullptr)
    {
        fclose(m_record);
        m_record = nullptr;
    }
    QueueDisc::DoDispose();
}

bool
AqmLlmQueueDisc::DoEnqueue(Ptr<QueueDiscItem> item)
{
    uint8_t tos = 0;
    uint8_t ecn = item->GetUint8Value(QueueItem::IP_DSFIELD, tos) ? (tos & 3) : 0;
    struct aqm_pkt pkt;
    uint64_t publishedBefore = m_core->cnt.states_published;
    if (aqm_enqueue(m_core, Now(), item->GetSize(), ecn, &pkt) == AQM_V_DROP)
    {
        DropBeforeEnqueue(item, "limit");
        return false;
    }
    GetInternalQueue(pkt.queue)->Enqueue(item);
    m_meta[pkt.queue].push_back(pkt);
    if (m_record != nullptr && m_region != nullptr &&
        m_core->cnt.states_published > publishedBefore)
    {
        // With aqmllmd reading the ring, keep our own copy of the record we
        // just published (we wrote it; the daemon only reads it).
        const struct aqm_chan* ch = &m_core->chan;
        m_pending[pkt.seq] = ch->states[(ch->state_prod - 1) & ch->state_mask];
    }
    if (m_region != nullptr && m_core->chan_attached)
    {
        WaitForVerdict(pkt.seq);
    }
    if (m_privateAttached)
    {
        ConsumePrivateStates();
    }
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
        if (m_record != nullptr)
        {
            Record(pkt, d, now);
        }
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

// One dataset row (sim/DATASET.md): the state at enqueue, what was done,
// and when the packet left.
void
AqmLlmQueueDisc::Record(const struct aqm_pkt& pkt, const struct aqm_decision& d, uint64_t now)
{
    auto it = m_pending.find(pkt.seq);
    if (it == m_pending.end())
    {
        return; // its state record was lost to a full ring
    }
    struct
    {
        struct aqm_state_rec state;
        uint64_t dequeue_ns;
        uint8_t action; // 0 forwarded, 1 dropped, 2 marked
        uint8_t source; // 0 DualPI2, 1 model
        uint8_t pad[6];
    } row;
    static_assert(sizeof(row) == 96, "dataset row");
    memset(&row, 0, sizeof(row));
    row.state = it->second;
    row.state.ts_ns -= m_clockOffsetNs;
    row.state.deadline_ns -= m_clockOffsetNs;
    row.dequeue_ns = now - m_clockOffsetNs;
    row.action = static_cast<uint8_t>(d.verdict);
    row.source = static_cast<uint8_t>(d.source);
    fwrite(&row, sizeof(row), 1, m_record);
    m_pending.erase(it);
    m_recorded++;
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
