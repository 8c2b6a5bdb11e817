// See WorldweaveCameraComponent.h. One request in flight at a time, polled without blocking from Tick.

#include "WorldweaveCameraComponent.h"

#include "Camera/CameraComponent.h"
#include "Engine/Texture2D.h"
#include "GameFramework/Actor.h"

#include <cstring>
#include <msgpack.hpp>
#include <string>

namespace
{
	using Packer = msgpack::packer<msgpack::sbuffer>;

	void PackStr(Packer& Pk, const char* Text)
	{
		const size_t Length = std::strlen(Text);
		Pk.pack_str(static_cast<uint32_t>(Length));
		Pk.pack_str_body(Text, static_cast<uint32_t>(Length));
	}

	void PackStr(Packer& Pk, const FString& Text)
	{
		const FTCHARToUTF8 Utf8(*Text);
		Pk.pack_str(static_cast<uint32_t>(Utf8.Length()));
		Pk.pack_str_body(Utf8.Get(), static_cast<uint32_t>(Utf8.Length()));
	}

	// The envelope of every message (SCHEMA.md): version, type, id and the body, a map of BodyFields entries that
	// the caller packs next.
	void PackEnvelope(Packer& Pk, const char* Type, uint64 Id, uint32 BodyFields)
	{
		Pk.pack_map(4);
		PackStr(Pk, "version");
		Pk.pack(WorldweaveUnreal::SchemaMajor);
		PackStr(Pk, "type");
		PackStr(Pk, Type);
		PackStr(Pk, "id");
		Pk.pack(Id);
		PackStr(Pk, "body");
		Pk.pack_map(BodyFields);
	}

	FVector Mul(const double M[3][3], const FVector& V)
	{
		return FVector(M[0][0] * V.X + M[0][1] * V.Y + M[0][2] * V.Z, M[1][0] * V.X + M[1][1] * V.Y + M[1][2] * V.Z,
			M[2][0] * V.X + M[2][1] * V.Y + M[2][2] * V.Z);
	}

	// Finds Key in a msgpack map; nullptr when absent.
	const msgpack::object* Find(const msgpack::object& Map, const char* Key)
	{
		if (Map.type != msgpack::type::MAP)
		{
			return nullptr;
		}
		for (uint32_t I = 0; I < Map.via.map.size; ++I)
		{
			const msgpack::object_kv& Kv = Map.via.map.ptr[I];
			if (Kv.key.type == msgpack::type::STR && Kv.key.via.str.size == std::strlen(Key) &&
				std::memcmp(Kv.key.via.str.ptr, Key, Kv.key.via.str.size) == 0)
			{
				return &Kv.val;
			}
		}
		return nullptr;
	}

	std::string AsString(const msgpack::object* Object)
	{
		return Object && Object->type == msgpack::type::STR ? std::string(Object->via.str.ptr, Object->via.str.size) : std::string();
	}
}

UWorldweaveCameraComponent::UWorldweaveCameraComponent()
{
	PrimaryComponentTick.bCanEverTick = true;
}

void UWorldweaveCameraComponent::BeginPlay()
{
	Super::BeginPlay();
	Socket = std::make_unique<zmq::socket_t>(Context, zmq::socket_type::dealer);
	Socket->set(zmq::sockopt::linger, 0);
	Socket->connect(TCHAR_TO_UTF8(*GatewayAddress));
	FrameTexture = UTexture2D::CreateTransient(Width, Height, PF_B8G8R8A8);
	FrameTexture->UpdateResource();
	SendHello();
}

void UWorldweaveCameraComponent::EndPlay(const EEndPlayReason::Type Reason)
{
	Socket.reset();
	Context.close();
	Super::EndPlay(Reason);
}

void UWorldweaveCameraComponent::SendHello()
{
	msgpack::sbuffer Buffer;
	Packer Pk(&Buffer);
	PackEnvelope(Pk, "hello", NextId++, 2);
	PackStr(Pk, "convention");
	PackStr(Pk, WorldweaveUnreal::Convention);
	PackStr(Pk, "client_name");
	PackStr(Pk, "unreal");
	Socket->send(zmq::buffer(Buffer.data(), Buffer.size()), zmq::send_flags::dontwait);
	bWaiting = true;
}

void UWorldweaveCameraComponent::SendPose(const UCameraComponent& Camera)
{
	const FVector Location = Camera.GetComponentLocation();  // centimetres
	const FRotator Rotator = Camera.GetComponentRotation();  // degrees
	CanonicalPosition = WorldweaveUnreal::MetresPerUnit * Mul(WorldweaveUnreal::WorldToCanonical, Location);
	const FVector ForwardLocal = Mul(WorldweaveUnreal::OpenCvToCamera, FVector(0.0, 0.0, 1.0));
	CanonicalForward = Mul(WorldweaveUnreal::WorldToCanonical, Rotator.RotateVector(ForwardLocal));

	msgpack::sbuffer Buffer;
	Packer Pk(&Buffer);
	PackEnvelope(Pk, TCHAR_TO_UTF8(*RequestType), NextId++, 4);
	PackStr(Pk, "world_id");
	PackStr(Pk, WorldId);
	PackStr(Pk, "poses");
	Pk.pack_array(1);
	Pk.pack_map(2);
	PackStr(Pk, "position");
	Pk.pack_array(3);
	Pk.pack(Location.X);
	Pk.pack(Location.Y);
	Pk.pack(Location.Z);
	PackStr(Pk, "rotator");
	Pk.pack_map(3);
	PackStr(Pk, "pitch");
	Pk.pack(Rotator.Pitch);
	PackStr(Pk, "yaw");
	Pk.pack(Rotator.Yaw);
	PackStr(Pk, "roll");
	Pk.pack(Rotator.Roll);
	PackStr(Pk, "intrinsics");
	Pk.pack_map(3);
	PackStr(Pk, "width");
	Pk.pack(Width);
	PackStr(Pk, "height");
	Pk.pack(Height);
	PackStr(Pk, WorldweaveUnreal::FovField);
	Pk.pack(Camera.FieldOfView);
	PackStr(Pk, "format");
	Pk.pack_map(1);
	PackStr(Pk, "image_encoding");
	PackStr(Pk, "raw");
	Socket->send(zmq::buffer(Buffer.data(), Buffer.size()), zmq::send_flags::dontwait);
	bWaiting = true;
}

void UWorldweaveCameraComponent::HandleReply(const zmq::message_t& Message)
{
	msgpack::object_handle Handle;
	try
	{
		Handle = msgpack::unpack(static_cast<const char*>(Message.data()), Message.size());
	}
	catch (const msgpack::unpack_error& Error)
	{
		UE_LOG(LogTemp, Error, TEXT("worldweave gateway: unreadable reply (%s)"), UTF8_TO_TCHAR(Error.what()));
		return;
	}
	const msgpack::object& Reply = Handle.get();
	const std::string Type = AsString(Find(Reply, "type"));
	const msgpack::object* Body = Find(Reply, "body");
	if (!Body)
	{
		return;
	}
	if (Type == "error")
	{
		UE_LOG(LogTemp, Error, TEXT("worldweave gateway: %s: %s"), UTF8_TO_TCHAR(AsString(Find(*Body, "code")).c_str()),
			UTF8_TO_TCHAR(AsString(Find(*Body, "message")).c_str()));
		return;
	}
	// "step_reply" (one per pose) holds one frame; "render_reply" a list of frames.
	const msgpack::object* Frames = Find(*Body, "frames");
	const msgpack::object* FramePtr = Type == "step_reply" ? Find(*Body, "frame")
		: Type == "render_reply" && Frames && Frames->type == msgpack::type::ARRAY && Frames->via.array.size > 0
		? &Frames->via.array.ptr[0] : nullptr;
	if (!FramePtr)
	{
		return;
	}
	const msgpack::object& Frame = *FramePtr;
	if (const msgpack::object* Coverage = Find(Frame, "coverage"))
	{
		LastCoverage = Coverage->type == msgpack::type::FLOAT64 || Coverage->type == msgpack::type::FLOAT32 ? Coverage->via.f64 : 0.0;
	}
	const msgpack::object* Rgb = Find(Frame, "rgb");
	const msgpack::object* Data = Rgb ? Find(*Rgb, "data") : nullptr;
	if (AsString(Rgb ? Find(*Rgb, "encoding") : nullptr) != "raw" || !Data || Data->type != msgpack::type::BIN ||
		Data->via.bin.size != static_cast<uint32_t>(Width * Height * 3))
	{
		return;
	}
	// RGB rows top to bottom -> the texture's BGRA rows top to bottom.
	FTexture2DMipMap& Mip = FrameTexture->GetPlatformData()->Mips[0];
	uint8* Pixels = static_cast<uint8*>(Mip.BulkData.Lock(LOCK_READ_WRITE));
	const uint8* Source = reinterpret_cast<const uint8*>(Data->via.bin.ptr);
	for (int32 I = 0; I < Width * Height; ++I)
	{
		Pixels[4 * I + 0] = Source[3 * I + 2];
		Pixels[4 * I + 1] = Source[3 * I + 1];
		Pixels[4 * I + 2] = Source[3 * I + 0];
		Pixels[4 * I + 3] = 255;
	}
	Mip.BulkData.Unlock();
	FrameTexture->UpdateResource();
}

void UWorldweaveCameraComponent::TickComponent(float DeltaTime, ELevelTick TickType, FActorComponentTickFunction* ThisTickFunction)
{
	Super::TickComponent(DeltaTime, TickType, ThisTickFunction);
	zmq::message_t Message;
	if (bWaiting && Socket->recv(Message, zmq::recv_flags::dontwait))
	{
		bWaiting = false;
		HandleReply(Message);
	}
	const UCameraComponent* Camera = GetOwner() ? GetOwner()->FindComponentByClass<UCameraComponent>() : nullptr;
	if (!bWaiting && Camera)
	{
		SendPose(*Camera);
	}
}
