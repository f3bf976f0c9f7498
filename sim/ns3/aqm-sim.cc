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
 *   policy dualpi2 | fifo | pie | codel | fq_codel | red
 *   classic_ecn 0 | 1
 *   seed 1
 *   flow <cc: dctcp|cubic|reno> <rtt_ms> <start_s> <stop_s>     (repeated)
 *   rate_at <time_s> <rate_mbps>          (repeated: capacity changes)
 *   loss <probability>                   (random loss on the bottleneck)
 *   udp <rate_mbps> <on_s> <off_s> <start_s> <stop_s> (repeated: on/off UDP)
 *
 * Senders share a 1 Gbit/s access link each (one-way delay chosen so the
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
#include <sstream>

using namespace ns3;

struct FlowSpec
{
    std::string cc;
    double rttMs;
    double startS;
    double stopS;
};

struct Scenario
{
    double rateMbps = 50;
    double durationS = 10;
    std::string policy = "dualpi2";
    bool classicEcn = true;
    uint32_t seed = 1;
    std::string channel;         // llm policy: shm name served by aqmllmd
    std::string record;          // dualpi2: dataset rows to this file
    std::string timeseries;      // CSV of per-interval measurements
    std::string sojourns;        // raw sojourns (u64 ns, queue in the top bit)
    double intervalS = 0.1;
    uint32_t llmLatencyUs = 0;   // llm policy: emulated inference latency
    std::vector<FlowSpec> flows;
    std::vector<std::pair<double, double>> rateAt; // (time s, Mbit/s)
    double loss = 0;
    struct Udp
    {
        double rateMbps, onS, offS, startS, stopS;
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
        else if (key == "timeseries")
            ok = static_cast<bool>(ls >> s.timeseries);
        else if (key == "sojourns")
            ok = static_cast<bool>(ls >> s.sojourns);
        else if (key == "interval_s")
            ok = static_cast<bool>(ls >> s.intervalS) && s.intervalS > 0;
        else if (key == "llm_latency_us")
            ok = static_cast<bool>(ls >> s.llmLatencyUs);
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
            ok = static_cast<bool>(ls >> u.rateMbps >> u.onS >> u.offS >> u.startS >> u.stopS) &&
                 u.rateMbps > 0 && u.onS > 0 && u.offS >= 0 && u.stopS > u.startS;
            s.udp.push_back(u);
        }
        else if (key == "flow")
        {
            FlowSpec f;
            ok = static_cast<bool>(ls >> f.cc >> f.rttMs >> f.startS >> f.stopS) &&
                 (f.cc == "dctcp" || f.cc == "cubic" || f.cc == "reno") && f.rttMs >= 2 &&
                 f.stopS > f.startS;
            s.flows.push_back(f);
        }
        else
            ok = false;
        NS_ABORT_MSG_IF(!ok, path << ":" << n << ": bad line: " << line);
    }
    NS_ABORT_MSG_IF(s.flows.empty(), path << ": no flow");
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

static std::vector<uint64_t> g_sojournAll; // for queue discs that are not ours

static std::vector<double> g_cwnd; // bytes, per flow, latest

static void
OnCwnd(size_t flow, uint32_t, uint32_t now)
{
    g_cwnd[flow] = now;
}

static void
HookCwnd(size_t flow, uint32_t node)
{
    std::ostringstream path;
    path << "/NodeList/" << node << "/$ns3::TcpL4Protocol/SocketList/0/CongestionWindow";
    Config::ConnectWithoutContext(path.str(), MakeBoundCallback(&OnCwnd, flow));
}

struct Sampler
{
    std::ofstream csv;
    std::vector<Ptr<PacketSink>> sinks;
    std::vector<uint64_t> lastRx;
    Ptr<QueueDisc> qd;
    Ptr<AqmLlmQueueDisc> ours;
    double interval;

    void Sample()
    {
        csv << Simulator::Now().GetSeconds();
        for (size_t i = 0; i < sinks.size(); i++)
        {
            uint64_t rx = sinks[i]->GetTotalRx();
            csv << "," << (rx - lastRx[i]) * 8.0 / interval / 1e6;
            lastRx[i] = rx;
        }
        csv << "," << qd->GetNPackets();
        if (ours)
        {
            csv << "," << ours->Sojourns(AQM_QUEUE_C).size() << ","
                << ours->Sojourns(AQM_QUEUE_L).size() << "," << ours->ProbBase();
        }
        for (double c : g_cwnd)
        {
            csv << "," << c;
        }
        csv << "\n";
        Simulator::Schedule(Seconds(interval), &Sampler::Sample, this);
    }
};

static void
OnSojourn(Time t)
{
    g_sojournAll.push_back(static_cast<uint64_t>(t.GetNanoSeconds()));
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

int
main(int argc, char* argv[])
{
    NS_ABORT_MSG_IF(argc != 3, "usage: aqm-sim CONFIG OUT.json");
    Scenario sc = ReadScenario(argv[1]);
    RngSeedManager::SetSeed(sc.seed);

    Config::SetDefault("ns3::TcpSocket::SegmentSize", UintegerValue(1448));
    Config::SetDefault("ns3::TcpSocket::SndBufSize", UintegerValue(1 << 24));
    Config::SetDefault("ns3::TcpSocket::RcvBufSize", UintegerValue(1 << 24));
    Config::SetDefault("ns3::TcpSocket::DelAckCount", UintegerValue(1));
    // Scalable flows send ECT(1): the L4S identifier.
    Config::SetDefault("ns3::TcpDctcp::UseEct0", BooleanValue(false));
    Config::SetDefault("ns3::TcpSocketBase::UseEcn",
                       StringValue(sc.classicEcn ? "On" : "AcceptOnly"));

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
        std::string tcp = sc.flows[i].cc == "dctcp"   ? "ns3::TcpDctcp"
                          : sc.flows[i].cc == "cubic" ? "ns3::TcpCubic"
                                                      : "ns3::TcpLinuxReno";
        Ptr<TcpL4Protocol> l4 = senders.Get(i)->GetObject<TcpL4Protocol>();
        l4->SetAttribute("SocketType", TypeIdValue(TypeId::LookupByName(tcp)));
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
    std::vector<Ipv4InterfaceContainer> accessIfs;
    for (size_t i = 0; i < n; i++)
    {
        double oneWay = sc.flows[i].rttMs / 2 - bottleneckDelayMs - 0.1;
        access.SetChannelAttribute("Delay", TimeValue(MicroSeconds(
                                                static_cast<int64_t>(std::max(0.01, oneWay) * 1000))));
        NetDeviceContainer d = access.Install(senders.Get(i), routers.Get(0));
        std::ostringstream net;
        net << "10.1." << i + 1 << ".0";
        addr.SetBase(net.str().c_str(), "255.255.255.0");
        accessIfs.push_back(addr.Assign(d));
    }
    NetDeviceContainer bn = bottleneck.Install(routers.Get(0), routers.Get(1));
    Ptr<PointToPointNetDevice> bnDev = DynamicCast<PointToPointNetDevice>(bn.Get(0));
    for (const auto& [t, mbps] : sc.rateAt)
    {
        Simulator::Schedule(Seconds(t), [bnDev, mbps]() {
            bnDev->SetDataRate(DataRate(static_cast<uint64_t>(mbps * 1e6)));
        });
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
                             "RecordPath", StringValue(sc.record));
    else if (sc.policy == "llm")
    {
        NS_ABORT_MSG_IF(sc.channel.empty(), "policy llm needs a channel");
        tch.SetRootQueueDisc("ns3::AqmLlmQueueDisc", "Seed", UintegerValue(sc.seed), "Channel",
                             StringValue(sc.channel), "InferenceLatencyUs",
                             UintegerValue(sc.llmLatencyUs), "RecordPath",
                             StringValue(sc.record));
    }
    else if (sc.policy == "fifo")
        tch.SetRootQueueDisc("ns3::FifoQueueDisc", "MaxSize", StringValue("1000p"));
    else if (sc.policy == "pie")
        tch.SetRootQueueDisc("ns3::PieQueueDisc", "UseEcn", BooleanValue(true));
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
    addr.SetBase("10.2.1.0", "255.255.255.0");
    addr.Assign(bn);
    addr.SetBase("10.3.1.0", "255.255.255.0");
    Ipv4InterfaceContainer sinkIf = addr.Assign(sk);
    Ipv4GlobalRoutingHelper::PopulateRoutingTables();

    std::vector<Ptr<PacketSink>> sinks;
    for (size_t i = 0; i < n; i++)
    {
        uint16_t port = static_cast<uint16_t>(5000 + i);
        BulkSendHelper src("ns3::TcpSocketFactory",
                           InetSocketAddress(sinkIf.GetAddress(1), port));
        src.SetAttribute("MaxBytes", UintegerValue(0));
        ApplicationContainer a = src.Install(senders.Get(i));
        a.Start(Seconds(sc.flows[i].startS));
        a.Stop(Seconds(std::min(sc.flows[i].stopS, sc.durationS)));
        PacketSinkHelper ps("ns3::TcpSocketFactory",
                            InetSocketAddress(Ipv4Address::GetAny(), port));
        ApplicationContainer s = ps.Install(receiver.Get(0));
        s.Start(Seconds(0));
        sinks.push_back(DynamicCast<PacketSink>(s.Get(0)));
    }

    // Unresponsive background: on/off UDP from an extra sender to the receiver.
    if (!sc.udp.empty())
    {
        Ptr<Node> udpNode = CreateObject<Node>();
        stack.Install(udpNode);
        access.SetChannelAttribute("Delay", TimeValue(MilliSeconds(1)));
        NetDeviceContainer d = access.Install(udpNode, routers.Get(0));
        addr.SetBase("10.4.1.0", "255.255.255.0");
        addr.Assign(d);
        Ipv4GlobalRoutingHelper::RecomputeRoutingTables();
        for (size_t i = 0; i < sc.udp.size(); i++)
        {
            const auto& u = sc.udp[i];
            uint16_t port = static_cast<uint16_t>(9000 + i);
            OnOffHelper onoff("ns3::UdpSocketFactory",
                              InetSocketAddress(sinkIf.GetAddress(1), port));
            onoff.SetConstantRate(DataRate(static_cast<uint64_t>(u.rateMbps * 1e6)), 1200);
            std::ostringstream on, off;
            on << "ns3::ConstantRandomVariable[Constant=" << u.onS << "]";
            off << "ns3::ConstantRandomVariable[Constant=" << u.offS << "]";
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

    g_cwnd.assign(n, 0);
    for (size_t i = 0; i < n; i++)
    {
        Simulator::Schedule(Seconds(sc.flows[i].startS + 0.001), &HookCwnd, i,
                            senders.Get(i)->GetId());
    }
    Sampler sampler;
    if (!sc.timeseries.empty())
    {
        sampler.csv.open(sc.timeseries);
        NS_ABORT_MSG_IF(!sampler.csv, "cannot write " << sc.timeseries);
        sampler.sinks = sinks;
        sampler.lastRx.assign(n, 0);
        sampler.qd = qd;
        sampler.ours = ours;
        sampler.interval = sc.intervalS;
        sampler.csv << "time_s";
        for (size_t i = 0; i < n; i++)
            sampler.csv << ",tput_mbps_" << i;
        sampler.csv << ",backlog_pkts";
        if (ours)
            sampler.csv << ",sent_c,sent_l,p_prime";
        for (size_t i = 0; i < n; i++)
            sampler.csv << ",cwnd_bytes_" << i;
        sampler.csv << "\n";
        Simulator::Schedule(Seconds(sc.intervalS), &Sampler::Sample, &sampler);
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

    // Metrics.
    std::vector<double> tput(n);
    double totalBits = 0;
    for (size_t i = 0; i < n; i++)
    {
        double active = std::min(sc.flows[i].stopS, sc.durationS) - sc.flows[i].startS;
        tput[i] = sinks[i]->GetTotalRx() * 8.0 / active / 1e6;
        totalBits += sinks[i]->GetTotalRx() * 8.0;
    }
    double sum = 0, sumSq = 0;
    for (double t : tput)
    {
        sum += t;
        sumSq += t * t;
    }
    // Capacity offered over the run, piecewise constant.
    double capacityBits = 0, lastT = 0, lastRate = sc.rateMbps;
    auto changes = sc.rateAt;
    std::sort(changes.begin(), changes.end());
    for (const auto& [t, mbps] : changes)
    {
        double tt = std::min(t, sc.durationS);
        capacityBits += lastRate * 1e6 * (tt - lastT);
        lastT = tt;
        lastRate = mbps;
    }
    capacityBits += lastRate * 1e6 * (sc.durationS - lastT);
    std::ofstream out(argv[2]);
    out << std::fixed << std::setprecision(6) << "{\"policy\": \"" << sc.policy << "\""
        << ", \"rate_mbps\": " << sc.rateMbps << ", \"duration_s\": " << sc.durationS
        << ", \"utilisation\": " << totalBits / capacityBits
        << ", \"jain\": " << (sumSq > 0 ? sum * sum / (n * sumSq) : 0) << ", \"flows\": [";
    for (size_t i = 0; i < n; i++)
    {
        out << (i ? ", " : "") << "{\"cc\": \"" << sc.flows[i].cc << "\", \"rtt_ms\": "
            << sc.flows[i].rttMs << ", \"throughput_mbps\": " << tput[i] << "}";
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
