/*
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * aqm-sim: one ns-3 dumbbell run under one queue policy, metrics as JSON.
 *
 * Usage: aqm-sim CONFIG OUT.json
 *
 * CONFIG is the flat form of a scenario that aqmllm_sim writes from TOML
 * (one "key value..." per line):
 *
 *   rate_mbps 50
 *   duration_s 10
 *   policy dualpi2 | llm | fifo | pie | codel | fq_codel | red
 *   classic_ecn 0 | 1                    (default for classic flows)
 *   seed 1
 *   flow <cc: dctcp|cubic|reno> <rtt_ms> <start_s> <stop_s> [<bytes> [<ecn: -1|0|1>]]
 *                                        (repeated; bytes 0: bulk; ecn -1: default)
 *   rate_at <time_s> <rate_mbps>         (repeated: capacity changes)
 *   trace <path>                         (Mahimahi trace, replayed per opportunity)
 *   loss <probability>                   (random loss on the bottleneck)
 *   udp <rate_mbps> <on_s> <off_s> <start_s> <stop_s> [exp]
 *                                        (repeated: on/off UDP; exp: exponential
 *                                         on and off periods with those means)
 *   timeseries <path> / interval_s <s> / sojourns <path> / record <path>
 *   channel <shm name> / llm_latency_us <us>   (policy llm)
 *   step_threshold_us <us> / target_us <us>    (the core's DualPI2, dualpi2 and llm)
 *   step_thresh_pkts <n> / min_qlen_step <n>   (the core: L step in packets when
 *                                         nonzero; no step mark below n L packets)
 *   pi_gain_pct <pct>                    (dualpi2: both PI gains, % of the core's
 *                                         defaults; 10-1000)
 *   harm_budget_pct <pct>                (the core: verdicts' signal budget, llm)
 *   verdict_guard <AQM_GUARD_*: 0-2>     (llm: what DualPI2 decides over a verdict)
 *   progress_s <s>                       (print "progress <t>" to stdout)
 *
 * Every sender has its own 1 Gbit/s access link (one-way delay chosen so the
 * flow's base RTT is rtt_ms) into the bottleneck router; the bottleneck's
 * queue disc is the policy under test; the device queue is one packet so
 * that the queue disc holds the queue.
 */

#include "aqm-llm-queue-disc.h"

#include "ns3/applications-module.h"
#include "ns3/core-module.h"
#include "ns3/internet-module.h"
#include "ns3/network-module.h"
#include "ns3/point-to-point-module.h"
#include "ns3/traffic-control-module.h"

#include <algorithm>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

using namespace ns3;

// Bytes of IP packet one Mahimahi delivery opportunity carries.
static const uint32_t kOpportunityBytes = 1500;
// The point-to-point header in front of every IP packet on the wire.
static const uint32_t kPppHeader = 2;
// Trace replay: times this close to an opportunity are that opportunity.
static const uint64_t kSameInstantNs = 1000;
// TCP buffers: larger than any window here.
static const uint32_t kSndBuf = 1 << 24;

struct FlowSpec
{
    std::string cc;
    double rttMs;
    double startS;
    double stopS;
    uint64_t bytes = 0; // 0: bulk, until stop_s
    int ecn = -1;       // -1: the scenario's default (classic_ecn)
};

struct Scenario
{
    double rateMbps = 50;
    double durationS = 10;
    std::string policy = "dualpi2";
    bool classicEcn = true;
    uint32_t seed = 1;
    std::string channel;       // llm policy: shm name served by aqmllmd
    std::string record;        // dataset rows to this file
    std::string behaviour = "dualpi2"; // policy dualpi2: who decides (behaviour-policy.h)
    double exploreRate = 0.02;         // behaviour explore: share decided at random
    std::string timeseries;    // CSV of per-interval measurements
    std::string sojourns;      // raw sojourns (u64 ns, queue in the top bit)
    std::string trace;         // Mahimahi trace
    double intervalS = 0.1;
    double progressS = 0;
    uint32_t llmLatencyUs = 0; // llm policy: emulated inference latency
    uint32_t stepThresholdUs = 1000; // the core: L queue step marking threshold
    uint32_t targetUs = 15000;       // the core: PI target delay
    uint32_t piGainPct = 100;        // the core: both PI gains, % of the defaults
    uint32_t stepThreshPkts = 0;     // the core: nonzero, the L step in packets
    uint32_t minQlenStep = 0;        // the core: no step mark below this L qlen
    uint32_t harmBudgetPct = AQM_HARM_BUDGET_DEFAULT; // the core: verdicts' budget
    uint32_t verdictGuard = AQM_GUARD_DUALPI2; // the core: DualPI2 over a verdict
    std::vector<FlowSpec> flows;
    std::vector<std::pair<double, double>> rateAt; // (time s, Mbit/s)
    double loss = 0;

    struct Udp
    {
        double rateMbps, onS, offS, startS, stopS;
        bool exponential;
    };

    std::vector<Udp> udp;
};

static Scenario
ReadScenario(const std::string& path)
{
    std::ifstream in(path);
    NS_ABORT_MSG_IF(!in, "cannot read " << path);
    Scenario s;
    std::string line;
    int n = 0;
    while (std::getline(in, line))
    {
        n++;
        std::istringstream ls(line);
        std::string key;
        if (!(ls >> key) || key[0] == '#')
        {
            continue;
        }
        bool ok = true;
        if (key == "rate_mbps")
            ok = static_cast<bool>(ls >> s.rateMbps) && s.rateMbps > 0;
        else if (key == "duration_s")
            ok = static_cast<bool>(ls >> s.durationS) && s.durationS > 0;
        else if (key == "policy")
            ok = static_cast<bool>(ls >> s.policy);
        else if (key == "classic_ecn")
            ok = static_cast<bool>(ls >> s.classicEcn);
        else if (key == "seed")
            ok = static_cast<bool>(ls >> s.seed);
        else if (key == "channel")
            ok = static_cast<bool>(ls >> s.channel);
        else if (key == "record")
            ok = static_cast<bool>(ls >> s.record);
        else if (key == "behaviour")
            ok = static_cast<bool>(ls >> s.behaviour) &&
                 (s.behaviour == "dualpi2" || s.behaviour == "pie" || s.behaviour == "explore");
        else if (key == "explore_rate")
            ok = static_cast<bool>(ls >> s.exploreRate) && s.exploreRate >= 0 &&
                 s.exploreRate <= 1;
        else if (key == "timeseries")
            ok = static_cast<bool>(ls >> s.timeseries);
        else if (key == "sojourns")
            ok = static_cast<bool>(ls >> s.sojourns);
        else if (key == "trace")
            ok = static_cast<bool>(ls >> s.trace);
        else if (key == "interval_s")
            ok = static_cast<bool>(ls >> s.intervalS) && s.intervalS > 0;
        else if (key == "progress_s")
            ok = static_cast<bool>(ls >> s.progressS) && s.progressS > 0;
        else if (key == "llm_latency_us")
            ok = static_cast<bool>(ls >> s.llmLatencyUs);
        else if (key == "step_threshold_us")
            ok = static_cast<bool>(ls >> s.stepThresholdUs) && s.stepThresholdUs >= 1;
        else if (key == "step_thresh_pkts")
            ok = static_cast<bool>(ls >> s.stepThreshPkts) &&
                 s.stepThreshPkts <= AQM_LIMIT_PKTS_MAX;
        else if (key == "min_qlen_step")
            ok = static_cast<bool>(ls >> s.minQlenStep) && s.minQlenStep <= AQM_LIMIT_PKTS_MAX;
        else if (key == "harm_budget_pct")
            ok = static_cast<bool>(ls >> s.harmBudgetPct) &&
                 (s.harmBudgetPct <= AQM_HARM_BUDGET_MAX ||
                  s.harmBudgetPct == AQM_HARM_BUDGET_OFF);
        else if (key == "target_us")
            ok = static_cast<bool>(ls >> s.targetUs) && s.targetUs >= 1;
        else if (key == "pi_gain_pct")
            ok = static_cast<bool>(ls >> s.piGainPct) && s.piGainPct >= 10 &&
                 s.piGainPct <= 1000;
        else if (key == "verdict_guard")
            ok = static_cast<bool>(ls >> s.verdictGuard) && s.verdictGuard <= AQM_GUARD_DUALPI2;
        else if (key == "rate_at")
        {
            double t, r;
            ok = static_cast<bool>(ls >> t >> r) && t >= 0 && r > 0;
            s.rateAt.emplace_back(t, r);
        }
        else if (key == "loss")
            ok = static_cast<bool>(ls >> s.loss) && s.loss >= 0 && s.loss < 1;
        else if (key == "udp")
        {
            Scenario::Udp u;
            std::string pattern;
            ok = static_cast<bool>(ls >> u.rateMbps >> u.onS >> u.offS >> u.startS >> u.stopS) &&
                 u.rateMbps > 0 && u.onS > 0 && u.offS >= 0 && u.stopS > u.startS;
            u.exponential = static_cast<bool>(ls >> pattern) && pattern == "exp";
            s.udp.push_back(u);
        }
        else if (key == "flow")
        {
            FlowSpec f;
            ok = static_cast<bool>(ls >> f.cc >> f.rttMs >> f.startS >> f.stopS) &&
                 (f.cc == "dctcp" || f.cc == "cubic" || f.cc == "reno") && f.rttMs >= 2 &&
                 f.stopS > f.startS;
            if (ok && (ls >> f.bytes))
            {
                ok = !(ls >> f.ecn).fail() ? (f.ecn >= -1 && f.ecn <= 1) : true;
            }
            s.flows.push_back(f);
        }
        else
            ok = false;
        NS_ABORT_MSG_IF(!ok, path << ":" << n << ": bad line: " << line);
    }
    NS_ABORT_MSG_IF(s.flows.empty(), path << ": no flow");
    NS_ABORT_MSG_IF(!s.trace.empty() && !s.rateAt.empty(), path << ": trace and rate_at");
    return s;
}

static double
Percentile(std::vector<uint64_t> v, double pct)
{
    if (v.empty())
    {
        return 0;
    }
    std::sort(v.begin(), v.end());
    size_t i = static_cast<size_t>(pct / 100.0 * (v.size() - 1) + 0.5);
    return v[i] / 1e6; // ms
}

/*
 * A Mahimahi trace on the bottleneck: each line is one opportunity (at that
 * ms, the trace looping with its last timestamp as period) to deliver up to
 * 1500 bytes. When a packet starts on the wire, the device's rate is set so
 * that the packet finishes exactly at the opportunity that carries its last
 * byte; opportunities that pass while the link is idle are lost.
 */
struct TraceLink
{
    std::vector<uint64_t> oppNs; // one period
    uint64_t periodNs = 0;
    uint64_t next = 0;            // index of the next unused opportunity (all periods)
    uint64_t curNs = 0;           // the opportunity partly used at curNs
    uint32_t left = 0;            // bytes it still carries
    Ptr<PointToPointNetDevice> dev;

    void Load(const std::string& path)
    {
        std::ifstream in(path);
        NS_ABORT_MSG_IF(!in, "cannot read trace " << path);
        uint64_t ms;
        while (in >> ms)
        {
            NS_ABORT_MSG_IF(!oppNs.empty() && ms * 1000000 < oppNs.back(),
                            path << ": not in time order");
            oppNs.push_back(ms * 1000000);
        }
        NS_ABORT_MSG_IF(oppNs.empty(), path << ": empty trace");
        periodNs = std::max<uint64_t>(oppNs.back(), 1000000);
    }

    uint64_t At(uint64_t k) const
    {
        return (k / oppNs.size()) * periodNs + oppNs[k % oppNs.size()];
    }

    /// Opportunities before t (ns).
    uint64_t CountBefore(uint64_t t) const
    {
        uint64_t full = t / periodNs;
        uint64_t rest = t % periodNs;
        return full * oppNs.size() +
               (std::lower_bound(oppNs.begin(), oppNs.end(), rest) - oppNs.begin());
    }

    void OnTxBegin(Ptr<const Packet> p)
    {
        uint64_t now = static_cast<uint64_t>(Simulator::Now().GetNanoSeconds());
        uint32_t bytes = p->GetSize() > kPppHeader ? p->GetSize() - kPppHeader : 1;
        uint64_t finish;
        if (left >= bytes && now <= curNs + kSameInstantNs)
        {
            left -= bytes; // the rest of the opportunity being used now
            finish = curNs;
        }
        else
        {
            // Packets sent back to back at one opportunity time start 1 ns
            // apart: the opportunities of that instant are still there.
            if (At(next) + kSameInstantNs < now)
            {
                next = CountBefore(now - kSameInstantNs);
            }
            finish = At(next++);
            left = kOpportunityBytes > bytes ? kOpportunityBytes - bytes : 0;
            curNs = finish;
        }
        uint64_t txNs = std::max<uint64_t>(finish > now ? finish - now : 0, 1);
        dev->SetDataRate(DataRate(p->GetSize() * 8ull * 1000000000ull / txNs + 1));
    }
};

static TraceLink g_trace;

/// Capacity offered in [0, t), bits: the trace, or rate_mbps with its steps.
static double
CapacityBits(const Scenario& sc, double t)
{
    if (!sc.trace.empty())
    {
        return static_cast<double>(g_trace.CountBefore(static_cast<uint64_t>(t * 1e9))) *
               kOpportunityBytes * 8.0;
    }
    double bits = 0, lastT = 0, lastRate = sc.rateMbps;
    auto changes = sc.rateAt;
    std::sort(changes.begin(), changes.end());
    for (const auto& [at, mbps] : changes)
    {
        double tt = std::min(at, t);
        bits += lastRate * 1e6 * (tt - lastT);
        lastT = tt;
        lastRate = mbps;
    }
    return bits + lastRate * 1e6 * std::max(0.0, t - lastT);
}

/*
 * ns-3's TcpDctcp answers a loss like an ECN mark, with cwnd (1 - alpha/2):
 * after a run of few marks alpha is near 0 and a loss barely slows it. Linux
 * DCTCP (dctcp_react_to_loss) and RFC 8257 section 3.5 halve on loss; so does
 * this one. ECN marks still get DCTCP's alpha response.
 */
class TcpDctcpLinux : public TcpDctcp
{
  public:
    static TypeId GetTypeId()
    {
        static TypeId tid = TypeId("ns3::TcpDctcpLinux")
                                .SetParent<TcpDctcp>()
                                .SetGroupName("Internet")
                                .AddConstructor<TcpDctcpLinux>();
        return tid;
    }

    TcpDctcpLinux() = default;

    TcpDctcpLinux(const TcpDctcpLinux& other)
        : TcpDctcp(other)
    {
    }

    Ptr<TcpCongestionOps> Fork() override
    {
        return CopyObject<TcpDctcpLinux>(this);
    }

    // ns-3 announces loss recovery (or RTO) right before asking for ssthresh.
    void CongestionStateSet(Ptr<TcpSocketState> tcb,
                            const TcpSocketState::TcpCongState_t state) override
    {
        m_loss = state == TcpSocketState::CA_RECOVERY || state == TcpSocketState::CA_LOSS;
        TcpDctcp::CongestionStateSet(tcb, state);
    }

    uint32_t GetSsThresh(Ptr<const TcpSocketState> tcb, uint32_t bytesInFlight) override
    {
        if (m_loss)
        {
            m_loss = false;
            return std::max(2 * tcb->m_segmentSize, tcb->m_cWnd.Get() / 2);
        }
        return TcpDctcp::GetSsThresh(tcb, bytesInFlight);
    }

  private:
    bool m_loss = false;
};

NS_OBJECT_ENSURE_REGISTERED(TcpDctcpLinux);

static std::vector<uint64_t> g_sojournAll; // for queue discs that are not ours
static std::vector<double> g_cwnd;         // bytes, per flow, latest
static uint64_t g_linkBytes = 0;           // IP bytes sent on the bottleneck

static void
OnCwnd(size_t flow, uint32_t, uint32_t now)
{
    g_cwnd[flow] = now;
}

static void
OnLinkTxEnd(Ptr<const Packet> p)
{
    g_linkBytes += p->GetSize() > kPppHeader ? p->GetSize() - kPppHeader : 0;
}

static void
OnSojourn(Time t)
{
    g_sojournAll.push_back(static_cast<uint64_t>(t.GetNanoSeconds()));
}

/*
 * One TCP transfer: bulk until stop_s, or `bytes` long (a short flow, timed
 * by the receiver). Its own socket, so that ECN is set per flow; the
 * congestion control is the sender node's socket type.
 */
class FlowApp : public Application
{
  public:
    void Setup(Address peer, uint64_t bytes, const std::string& ecn, size_t index)
    {
        m_peer = peer;
        m_bytes = bytes;
        m_ecn = ecn;
        m_index = index;
    }

  private:
    void StartApplication() override
    {
        m_socket = Socket::CreateSocket(GetNode(), TcpSocketFactory::GetTypeId());
        m_socket->SetAttribute("UseEcn", StringValue(m_ecn));
        m_socket->TraceConnectWithoutContext("CongestionWindow",
                                             MakeBoundCallback(&OnCwnd, m_index));
        m_socket->Bind();
        m_socket->Connect(m_peer);
        m_socket->SetSendCallback(MakeCallback(&FlowApp::Send, this));
        m_socket->SetConnectCallback(MakeCallback(&FlowApp::Connected, this),
                                     MakeNullCallback<void, Ptr<Socket>>());
    }

    void StopApplication() override
    {
        if (m_socket)
        {
            m_socket->Close();
            m_socket = nullptr;
        }
    }

    void Connected(Ptr<Socket> s)
    {
        Send(s, s->GetTxAvailable());
    }

    void Send(Ptr<Socket> s, uint32_t)
    {
        while (m_socket && (m_bytes == 0 || m_sent < m_bytes))
        {
            // Keep about two windows buffered: never app-limited, and a flow
            // that stops does not drain megabytes of old data afterwards.
            uint64_t buffered = kSndBuf - s->GetTxAvailable();
            uint64_t cap = 2 * std::max<uint64_t>(static_cast<uint64_t>(g_cwnd[m_index]),
                                                  14480) + 65536;
            if (buffered >= cap)
            {
                return;
            }
            uint64_t want = std::min<uint64_t>(64 * 1024, cap - buffered);
            if (m_bytes)
            {
                want = std::min(want, m_bytes - m_sent);
            }
            uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(want, s->GetTxAvailable()));
            if (n == 0)
            {
                return;
            }
            int sent = s->Send(Create<Packet>(n));
            if (sent <= 0)
            {
                return;
            }
            m_sent += static_cast<uint64_t>(sent);
        }
        if (m_socket && m_bytes && m_sent >= m_bytes)
        {
            m_socket->Close(); // FIN after the last byte
            m_socket = nullptr;
        }
    }

    Address m_peer;
    uint64_t m_bytes = 0;
    uint64_t m_sent = 0;
    std::string m_ecn;
    size_t m_index = 0;
    Ptr<Socket> m_socket;
};

/*
 * The receiving end of one flow. Its listening socket runs the flow's own
 * congestion control: a DCTCP receiver echoes CE per packet (the feedback a
 * scalable sender needs); a classic receiver would latch ECE until CWR, and
 * DCTCP would then see whole windows marked and back off like Reno.
 */
class SinkApp : public Application
{
  public:
    void Setup(uint16_t port, TypeId cc, uint64_t want, size_t index)
    {
        m_port = port;
        m_cc = cc;
        m_want = want;
        m_index = index;
    }

    uint64_t GetTotalRx() const
    {
        return m_rx;
    }

    uint64_t Want() const
    {
        return m_want;
    }

    double DoneS() const
    {
        return m_doneS;
    }

  private:
    void StartApplication() override
    {
        m_socket = GetNode()->GetObject<TcpL4Protocol>()->CreateSocket(m_cc);
        m_socket->Bind(InetSocketAddress(Ipv4Address::GetAny(), m_port));
        m_socket->Listen();
        m_socket->SetAcceptCallback(MakeNullCallback<bool, Ptr<Socket>, const Address&>(),
                                    MakeCallback(&SinkApp::Accept, this));
    }

    void StopApplication() override
    {
        for (auto& s : m_conns)
            s->Close();
        if (m_socket)
            m_socket->Close();
    }

    void Accept(Ptr<Socket> s, const Address&)
    {
        s->SetRecvCallback(MakeCallback(&SinkApp::Read, this));
        m_conns.push_back(s);
    }

    void Read(Ptr<Socket> s)
    {
        while (Ptr<Packet> p = s->Recv())
        {
            if (p->GetSize() == 0)
                break;
            m_rx += p->GetSize();
        }
        if (m_want && m_doneS < 0 && m_rx >= m_want)
            m_doneS = Simulator::Now().GetSeconds();
    }

    uint16_t m_port = 0;
    TypeId m_cc;
    uint64_t m_want = 0; // short flow size; 0: bulk
    double m_doneS = -1; // when its last byte arrived
    uint64_t m_rx = 0;
    size_t m_index = 0;
    Ptr<Socket> m_socket;
    std::vector<Ptr<Socket>> m_conns;
};

static std::vector<Ptr<SinkApp>> g_recv;

static double
P99Since(const std::vector<uint64_t>& v, size_t& from)
{
    if (from >= v.size())
    {
        from = v.size();
        return 0;
    }
    std::vector<uint64_t> w(v.begin() + static_cast<long>(from), v.end());
    from = v.size();
    size_t k = static_cast<size_t>(0.99 * (w.size() - 1) + 0.5);
    std::nth_element(w.begin(), w.begin() + static_cast<long>(k), w.end());
    return w[k] / 1e6;
}

/*
 * Per-interval measurements, one CSV row each: what each flow delivered, the
 * link's bytes against the capacity offered, the backlog, marks and drops
 * (per queue for the core), the interval's p99 sojourn, p', congestion windows.
 */
struct Sampler
{
    std::ofstream csv;
    const Scenario* sc = nullptr;
    std::vector<uint64_t> lastRx;
    Ptr<QueueDisc> qd;
    Ptr<AqmLlmQueueDisc> ours;
    double interval = 0.1;
    double lastT = 0;
    uint64_t lastLink = 0;
    struct aqm_counters lastCnt = {};
    uint64_t lastMarked = 0, lastDropped = 0;
    size_t sojournFrom[AQM_NQUEUES] = {0, 0};

    void Header(size_t n)
    {
        csv << "time_s";
        for (size_t i = 0; i < n; i++)
            csv << ",tput_mbps_" << i;
        csv << ",link_mbps,capacity_mbps,backlog_pkts";
        if (ours)
            csv << ",marks_c,marks_l,drops_c,drops_l,marks_model,drops_model,"
                   "sojourn_p99_ms_c,sojourn_p99_ms_l,sent_c,sent_l,p_prime";
        else
            csv << ",marks,drops,sojourn_p99_ms";
        for (size_t i = 0; i < n; i++)
            csv << ",cwnd_bytes_" << i;
        csv << "\n";
    }

    void Sample()
    {
        double now = Simulator::Now().GetSeconds();
        double dt = now - lastT;
        csv << now;
        for (size_t i = 0; i < g_recv.size(); i++)
        {
            uint64_t rx = g_recv[i]->GetTotalRx();
            csv << "," << (rx - lastRx[i]) * 8.0 / dt / 1e6;
            lastRx[i] = rx;
        }
        csv << "," << (g_linkBytes - lastLink) * 8.0 / dt / 1e6 << ","
            << (CapacityBits(*sc, now) - CapacityBits(*sc, lastT)) / dt / 1e6 << ","
            << qd->GetNPackets();
        lastLink = g_linkBytes;
        if (ours)
        {
            struct aqm_counters c = ours->Counters();
            auto d = [](uint64_t a, uint64_t b) { return a - b; };
            for (unsigned q = 0; q < AQM_NQUEUES; q++)
                csv << "," << d(c.marks_fallback[q] + c.marks_model[q],
                                lastCnt.marks_fallback[q] + lastCnt.marks_model[q]);
            for (unsigned q = 0; q < AQM_NQUEUES; q++)
                csv << ","
                    << d(c.drops_fallback[q] + c.drops_model[q] + c.drops_limit[q],
                         lastCnt.drops_fallback[q] + lastCnt.drops_model[q] +
                             lastCnt.drops_limit[q]);
            csv << "," << d(c.marks_model[0] + c.marks_model[1],
                            lastCnt.marks_model[0] + lastCnt.marks_model[1])
                << "," << d(c.drops_model[0] + c.drops_model[1],
                            lastCnt.drops_model[0] + lastCnt.drops_model[1]);
            lastCnt = c;
            for (unsigned q = 0; q < AQM_NQUEUES; q++)
                csv << "," << P99Since(ours->Sojourns(q), sojournFrom[q]);
            csv << "," << ours->Sojourns(AQM_QUEUE_C).size() << ","
                << ours->Sojourns(AQM_QUEUE_L).size() << "," << ours->ProbBase();
        }
        else
        {
            QueueDisc::Stats st = qd->GetStats();
            csv << "," << st.nTotalMarkedPackets - lastMarked << ","
                << st.nTotalDroppedPackets - lastDropped << ","
                << P99Since(g_sojournAll, sojournFrom[0]);
            lastMarked = st.nTotalMarkedPackets;
            lastDropped = st.nTotalDroppedPackets;
        }
        for (double c : g_cwnd)
            csv << "," << c;
        csv << "\n";
        lastT = now;
        if (now + interval <= sc->durationS + 1e-9)
            Simulator::Schedule(Seconds(interval), &Sampler::Sample, this);
    }
};

static void
Progress(double every, double until)
{
    std::cout << "progress " << Simulator::Now().GetSeconds() << std::endl;
    if (Simulator::Now().GetSeconds() + every < until)
        Simulator::Schedule(Seconds(every), &Progress, every, until);
}

static std::string
SojournJson(const std::vector<uint64_t>& v)
{
    std::ostringstream o;
    o << std::fixed << std::setprecision(4) << "{\"p50\": " << Percentile(v, 50)
      << ", \"p90\": " << Percentile(v, 90) << ", \"p99\": " << Percentile(v, 99)
      << ", \"p999\": " << Percentile(v, 99.9) << ", \"n\": " << v.size() << "}";
    return o.str();
}

static std::string
CcType(const std::string& cc)
{
    return cc == "dctcp"   ? "ns3::TcpDctcpLinux"
           : cc == "cubic" ? "ns3::TcpCubic"
                           : "ns3::TcpLinuxReno";
}

static std::string
Subnet(unsigned a, size_t i)
{
    std::ostringstream net;
    net << a << "." << (i / 256) % 256 << "." << i % 256 << ".0";
    return net.str();
}

int
main(int argc, char* argv[])
{
    NS_ABORT_MSG_IF(argc != 3, "usage: aqm-sim CONFIG OUT.json");
    Scenario sc = ReadScenario(argv[1]);
    RngSeedManager::SetSeed(sc.seed);

    Config::SetDefault("ns3::TcpSocket::SegmentSize", UintegerValue(1448));
    Config::SetDefault("ns3::TcpSocket::SndBufSize", UintegerValue(kSndBuf));
    Config::SetDefault("ns3::TcpSocket::RcvBufSize", UintegerValue(kSndBuf));
    Config::SetDefault("ns3::TcpSocket::DelAckCount", UintegerValue(1));
    // Linux's minimum RTO (ns-3's default is RFC 6298's 1 s).
    Config::SetDefault("ns3::TcpSocketBase::MinRto", TimeValue(MilliSeconds(200)));
    // Scalable flows send ECT(1): the L4S identifier.
    Config::SetDefault("ns3::TcpDctcp::UseEct0", BooleanValue(false));
    // Receivers echo ECN when the sender asks; each sender sets its own.
    Config::SetDefault("ns3::TcpSocketBase::UseEcn", StringValue("AcceptOnly"));

    size_t n = sc.flows.size();
    NodeContainer senders, routers, receiver;
    senders.Create(n);
    routers.Create(2);
    receiver.Create(1);
    InternetStackHelper stack;
    stack.InstallAll();

    // Per-node TCP variant (sockets are created with the node's type).
    for (size_t i = 0; i < n; i++)
    {
        Ptr<TcpL4Protocol> l4 = senders.Get(i)->GetObject<TcpL4Protocol>();
        l4->SetAttribute("SocketType", TypeIdValue(TypeId::LookupByName(CcType(sc.flows[i].cc))));
    }

    const double bottleneckDelayMs = 0.5;
    PointToPointHelper access;
    access.SetDeviceAttribute("DataRate", StringValue("1Gbps"));
    PointToPointHelper bottleneck;
    bottleneck.SetDeviceAttribute("DataRate",
                                  DataRateValue(DataRate(static_cast<uint64_t>(sc.rateMbps * 1e6))));
    bottleneck.SetChannelAttribute("Delay", TimeValue(MilliSeconds(bottleneckDelayMs)));
    bottleneck.SetQueue("ns3::DropTailQueue", "MaxSize", StringValue("1p"));
    PointToPointHelper sink;
    sink.SetDeviceAttribute("DataRate", StringValue("1Gbps"));
    sink.SetChannelAttribute("Delay", TimeValue(MicroSeconds(100)));

    Ipv4AddressHelper addr;
    for (size_t i = 0; i < n; i++)
    {
        double oneWay = sc.flows[i].rttMs / 2 - bottleneckDelayMs - 0.1;
        access.SetChannelAttribute("Delay", TimeValue(MicroSeconds(
                                                static_cast<int64_t>(std::max(0.01, oneWay) * 1000))));
        NetDeviceContainer d = access.Install(senders.Get(i), routers.Get(0));
        addr.SetBase(Subnet(10, i).c_str(), "255.255.255.0");
        addr.Assign(d);
    }
    NetDeviceContainer bn = bottleneck.Install(routers.Get(0), routers.Get(1));
    Ptr<PointToPointNetDevice> bnDev = DynamicCast<PointToPointNetDevice>(bn.Get(0));
    bnDev->TraceConnectWithoutContext("PhyTxEnd", MakeCallback(&OnLinkTxEnd));
    for (const auto& [t, mbps] : sc.rateAt)
    {
        Simulator::Schedule(Seconds(t), [bnDev, mbps]() {
            bnDev->SetDataRate(DataRate(static_cast<uint64_t>(mbps * 1e6)));
        });
    }
    if (!sc.trace.empty())
    {
        g_trace.Load(sc.trace);
        g_trace.dev = bnDev;
        bnDev->TraceConnectWithoutContext("PhyTxBegin",
                                          MakeCallback(&TraceLink::OnTxBegin, &g_trace));
    }
    if (sc.loss > 0)
    {
        Ptr<RateErrorModel> em = CreateObject<RateErrorModel>();
        em->SetAttribute("ErrorRate", DoubleValue(sc.loss));
        em->SetAttribute("ErrorUnit", StringValue("ERROR_UNIT_PACKET"));
        bn.Get(1)->SetAttribute("ReceiveErrorModel", PointerValue(em));
    }
    NetDeviceContainer sk = sink.Install(routers.Get(1), receiver.Get(0));

    TrafficControlHelper tch;
    if (sc.policy == "dualpi2")
        tch.SetRootQueueDisc("ns3::AqmLlmQueueDisc", "Seed", UintegerValue(sc.seed),
                             "RecordPath", StringValue(sc.record), "StepThresholdUs",
                             UintegerValue(sc.stepThresholdUs), "TargetUs",
                             UintegerValue(sc.targetUs), "PiGainPct", UintegerValue(sc.piGainPct),
                             "Behaviour", StringValue(sc.behaviour),
                             "ExploreRate", DoubleValue(sc.exploreRate), "StepThresholdPkts",
                             UintegerValue(sc.stepThreshPkts), "MinQlenStep",
                             UintegerValue(sc.minQlenStep), "HarmBudgetPct",
                             // A behaviour policy decides in DualPI2's place by design
                             // (recording): the budget guards served models only.
                             UintegerValue(sc.behaviour == "dualpi2" ? sc.harmBudgetPct
                                                                     : AQM_HARM_BUDGET_OFF));
    else if (sc.policy == "llm")
    {
        NS_ABORT_MSG_IF(sc.channel.empty(), "policy llm needs a channel");
        tch.SetRootQueueDisc("ns3::AqmLlmQueueDisc", "Seed", UintegerValue(sc.seed), "Channel",
                             StringValue(sc.channel), "InferenceLatencyUs",
                             UintegerValue(sc.llmLatencyUs), "RecordPath",
                             StringValue(sc.record), "StepThresholdUs",
                             UintegerValue(sc.stepThresholdUs), "TargetUs",
                             UintegerValue(sc.targetUs), "VerdictGuard",
                             UintegerValue(sc.verdictGuard), "StepThresholdPkts",
                             UintegerValue(sc.stepThreshPkts), "MinQlenStep",
                             UintegerValue(sc.minQlenStep), "HarmBudgetPct",
                             UintegerValue(sc.harmBudgetPct));
    }
    else if (sc.policy == "fifo")
        tch.SetRootQueueDisc("ns3::FifoQueueDisc", "MaxSize", StringValue("1000p"));
    else if (sc.policy == "pie")
        tch.SetRootQueueDisc("ns3::PieQueueDisc", "UseEcn", BooleanValue(true), "MaxSize",
                             StringValue("1000p")); // its default, 25 packets, would tail-drop
    else if (sc.policy == "codel")
        tch.SetRootQueueDisc("ns3::CoDelQueueDisc", "UseEcn", BooleanValue(true));
    else if (sc.policy == "fq_codel")
        tch.SetRootQueueDisc("ns3::FqCoDelQueueDisc", "UseEcn", BooleanValue(true));
    else if (sc.policy == "red")
        tch.SetRootQueueDisc("ns3::RedQueueDisc", "UseEcn", BooleanValue(true), "MaxSize",
                             StringValue("1000p"));
    else
        NS_ABORT_MSG("unknown policy " << sc.policy);
    QueueDiscContainer qdc = tch.Install(bn.Get(0));
    Ptr<QueueDisc> qd = qdc.Get(0);
    Ptr<AqmLlmQueueDisc> ours = DynamicCast<AqmLlmQueueDisc>(qd);
    if (!ours)
    {
        qd->TraceConnectWithoutContext("SojournTime", MakeCallback(&OnSojourn));
    }
    addr.SetBase("192.168.1.0", "255.255.255.0");
    addr.Assign(bn);
    addr.SetBase("192.168.2.0", "255.255.255.0");
    Ipv4InterfaceContainer sinkIf = addr.Assign(sk);

    g_cwnd.assign(n, 0);
    g_recv.resize(n);
    for (size_t i = 0; i < n; i++)
    {
        const FlowSpec& f = sc.flows[i];
        uint16_t port = static_cast<uint16_t>(5000 + i);
        bool ecn = f.cc == "dctcp" || (f.ecn < 0 ? sc.classicEcn : f.ecn == 1);
        Ptr<FlowApp> app = CreateObject<FlowApp>();
        app->Setup(InetSocketAddress(sinkIf.GetAddress(1), port), f.bytes,
                   ecn ? "On" : "Off", i);
        senders.Get(i)->AddApplication(app);
        app->SetStartTime(Seconds(f.startS));
        app->SetStopTime(Seconds(std::min(f.stopS, sc.durationS)));
        Ptr<SinkApp> rx = CreateObject<SinkApp>();
        rx->Setup(port, TypeId::LookupByName(CcType(f.cc)), f.bytes, i);
        receiver.Get(0)->AddApplication(rx);
        rx->SetStartTime(Seconds(0));
        g_recv[i] = rx;
    }

    // Unresponsive background: on/off UDP from an extra sender to the receiver.
    if (!sc.udp.empty())
    {
        Ptr<Node> udpNode = CreateObject<Node>();
        stack.Install(udpNode);
        access.SetChannelAttribute("Delay", TimeValue(MilliSeconds(1)));
        NetDeviceContainer d = access.Install(udpNode, routers.Get(0));
        addr.SetBase("192.168.3.0", "255.255.255.0");
        addr.Assign(d);
        for (size_t i = 0; i < sc.udp.size(); i++)
        {
            const auto& u = sc.udp[i];
            uint16_t port = static_cast<uint16_t>(60000 + i);
            OnOffHelper onoff("ns3::UdpSocketFactory",
                              InetSocketAddress(sinkIf.GetAddress(1), port));
            onoff.SetConstantRate(DataRate(static_cast<uint64_t>(u.rateMbps * 1e6)), 1200);
            std::ostringstream on, off;
            const char* rv = u.exponential ? "ns3::ExponentialRandomVariable[Mean="
                                           : "ns3::ConstantRandomVariable[Constant=";
            on << rv << u.onS << "]";
            off << rv << u.offS << "]";
            onoff.SetAttribute("OnTime", StringValue(on.str()));
            onoff.SetAttribute("OffTime", StringValue(off.str()));
            ApplicationContainer a = onoff.Install(udpNode);
            a.Start(Seconds(u.startS));
            a.Stop(Seconds(std::min(u.stopS, sc.durationS)));
            PacketSinkHelper ps("ns3::UdpSocketFactory",
                                InetSocketAddress(Ipv4Address::GetAny(), port));
            ps.Install(receiver.Get(0)).Start(Seconds(0));
        }
    }
    Ipv4GlobalRoutingHelper::PopulateRoutingTables();

    Sampler sampler;
    if (!sc.timeseries.empty())
    {
        sampler.csv.open(sc.timeseries);
        NS_ABORT_MSG_IF(!sampler.csv, "cannot write " << sc.timeseries);
        sampler.sc = &sc;
        sampler.lastRx.assign(n, 0);
        sampler.qd = qd;
        sampler.ours = ours;
        sampler.interval = sc.intervalS;
        sampler.Header(n);
        Simulator::Schedule(Seconds(sc.intervalS), &Sampler::Sample, &sampler);
    }
    if (sc.progressS > 0)
    {
        Simulator::Schedule(Seconds(sc.progressS), &Progress, sc.progressS, sc.durationS);
    }

    Simulator::Stop(Seconds(sc.durationS));
    Simulator::Run();

    if (!sc.sojourns.empty())
    {
        // u64 ns each; the top bit says L queue (dualpi2/llm only).
        std::ofstream so(sc.sojourns, std::ios::binary);
        for (unsigned q = 0; q < AQM_NQUEUES && ours; q++)
            for (uint64_t v : ours->Sojourns(q))
            {
                uint64_t w = v | (static_cast<uint64_t>(q) << 63);
                so.write(reinterpret_cast<const char*>(&w), sizeof(w));
            }
        if (!ours)
            so.write(reinterpret_cast<const char*>(g_sojournAll.data()),
                     static_cast<std::streamsize>(g_sojournAll.size() * sizeof(uint64_t)));
    }

    // Metrics. Throughput of bulk flows over their active time; Jain's index
    // over the bulk flows; short flows by their completion time.
    std::vector<double> tput(n);
    double goodBits = 0, sum = 0, sumSq = 0;
    size_t bulk = 0;
    for (size_t i = 0; i < n; i++)
    {
        const FlowSpec& f = sc.flows[i];
        double end = std::min(f.stopS, sc.durationS);
        if (f.bytes && g_recv[i]->DoneS() >= 0)
        {
            end = g_recv[i]->DoneS();
        }
        uint64_t rx = g_recv[i]->GetTotalRx();
        tput[i] = end > f.startS ? rx * 8.0 / (end - f.startS) / 1e6 : 0;
        goodBits += rx * 8.0;
        if (!f.bytes)
        {
            bulk++;
            sum += tput[i];
            sumSq += tput[i] * tput[i];
        }
    }
    double capacityBits = CapacityBits(sc, sc.durationS);
    std::ofstream out(argv[2]);
    out << std::fixed << std::setprecision(6) << "{\"policy\": \"" << sc.policy << "\""
        << ", \"rate_mbps\": " << sc.rateMbps << ", \"duration_s\": " << sc.durationS
        << ", \"capacity_mbps\": " << capacityBits / sc.durationS / 1e6
        << ", \"utilisation\": " << g_linkBytes * 8.0 / capacityBits
        << ", \"goodput_utilisation\": " << goodBits / capacityBits
        << ", \"jain\": " << (sumSq > 0 ? sum * sum / (bulk * sumSq) : 0) << ", \"flows\": [";
    for (size_t i = 0; i < n; i++)
    {
        const FlowSpec& f = sc.flows[i];
        out << (i ? ", " : "") << "{\"cc\": \"" << f.cc << "\", \"rtt_ms\": " << f.rttMs
            << ", \"ecn\": "
            << ((f.cc == "dctcp" || (f.ecn < 0 ? sc.classicEcn : f.ecn == 1)) ? "true"
                                                                                : "false")
            << ", \"start_s\": " << f.startS << ", \"throughput_mbps\": " << tput[i]
            << ", \"received_bytes\": " << g_recv[i]->GetTotalRx();
        if (f.bytes)
        {
            out << ", \"bytes\": " << f.bytes << ", \"fct_ms\": ";
            if (g_recv[i]->DoneS() >= 0)
                out << (g_recv[i]->DoneS() - f.startS) * 1e3;
            else
                out << "null";
        }
        out << "}";
    }
    out << "]";
    if (ours)
    {
        struct aqm_counters c = ours->Counters();
        out << ", \"sojourn_ms_l\": " << SojournJson(ours->Sojourns(AQM_QUEUE_L))
            << ", \"sojourn_ms_c\": " << SojournJson(ours->Sojourns(AQM_QUEUE_C))
            << ", \"p_prime\": " << ours->ProbBase() << ", \"marks\": [" << c.marks_fallback[0]
            << ", " << c.marks_fallback[1] << "], \"drops\": [" << c.drops_fallback[0] << ", "
            << c.drops_fallback[1] << "], \"drops_limit\": [" << c.drops_limit[0] << ", "
            << c.drops_limit[1] << "], \"step_marks\": " << c.step_marks
            << ", \"marks_model\": [" << c.marks_model[0] << ", " << c.marks_model[1]
            << "], \"drops_model\": [" << c.drops_model[0] << ", " << c.drops_model[1]
            << "], \"decisions_model\": " << c.decisions_model
            << ", \"decisions_fallback\": " << c.decisions_fallback
            << ", \"verdicts_applied\": " << c.verdicts_applied
            << ", \"verdicts_late\": " << c.verdicts_late
            << ", \"states_published\": " << c.states_published
            << ", \"states_lost\": " << c.states_lost
            << ", \"verdicts_capped\": [" << c.verdicts_capped[0] << ", "
            << c.verdicts_capped[1] << "], \"states_slot_busy\": " << c.states_slot_busy
            << ", \"core_params\": {\"step_threshold_us\": " << sc.stepThresholdUs
            << ", \"step_thresh_pkts\": " << sc.stepThreshPkts
            << ", \"min_qlen_step\": " << sc.minQlenStep << ", \"target_us\": " << sc.targetUs
            << ", \"harm_budget_pct\": " << sc.harmBudgetPct << "}"
            << ", \"verdict_timeouts\": " << ours->VerdictTimeouts()
            << ", \"recorded\": " << ours->Recorded();
    }
    else
    {
        out << ", \"sojourn_ms\": " << SojournJson(g_sojournAll);
    }
    QueueDisc::Stats st = qd->GetStats();
    out << ", \"queue_disc\": {\"dropped\": " << st.nTotalDroppedPackets
        << ", \"marked\": " << st.nTotalMarkedPackets << ", \"sent\": " << st.nTotalSentPackets
        << "}}\n";
    Simulator::Destroy();
    return 0;
}
