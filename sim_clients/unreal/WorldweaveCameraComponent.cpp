// See WorldweaveCameraComponent.h. One request in flight at a time, polled without blocking from Tick; a step is
// answered by one step_reply per frame (a rig: one per camera), the last with last_in_request.

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

	// A position (Unreal units) then a rotator: the "unreal" pose form (position_rotator).
	void PackPose(Packer& Pk, const FVector& Location, const FRotator& Rotator)
	{
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
	}

	// A rig camera's mount as the gateway reads it (RigCamera.mount, "unreal"): the camera's transform relative to
	// the body, T_e = T_body^-1 T_camera: location in the body's axes (centimetres; the actor's scale is left out,
	// so a scaled actor still gives a rigid mount) and the relative rotation as a rotator. The gateway turns it into
	// the canonical T_body_cam = [A^T R_e A | s A^T t_e] (conventions.Convention.mount_to_canonical); the body pose is
	// sent like a camera's, so body pose x mount is exactly the pose this camera would send alone.
	void PackMount(Packer& Pk, const AActor& Body, const UCameraComponent& Camera)
	{
		const FQuat BodyQuat = Body.GetActorQuat();
		const FVector Location = BodyQuat.UnrotateVector(Camera.GetComponentLocation() - Body.GetActorLocation());
		const FRotator Rotator = (BodyQuat.Inverse() * Camera.GetComponentQuat()).Rotator();
		PackPose(Pk, Location, Rotator);
	}

	// Intrinsics as a size and the horizontal field of view (UCameraComponent::FieldOfView, degrees).
	void PackIntrinsics(Packer& Pk, int32 Width, int32 Height, float FieldOfView)
	{
		Pk.pack_map(3);
		PackStr(Pk, "width");
		Pk.pack(Width);
		PackStr(Pk, "height");
		Pk.pack(Height);
		PackStr(Pk, WorldweaveUnreal::FovField);
		Pk.pack(FieldOfView);
	}

	void PackRawFormat(Packer& Pk)
	{
		Pk.pack_map(1);
		PackStr(Pk, "image_encoding");
		PackStr(Pk, "raw");
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

	// A frame's raw RGB (rows top to bottom) -> Texture's BGRA rows top to bottom; other encodings or sizes are skipped.
	void WriteFrame(const msgpack::object& Frame, UTexture2D* Texture, int32 Width, int32 Height)
	{
		const msgpack::object* Rgb = Find(Frame, "rgb");
		const msgpack::object* Data = Rgb ? Find(*Rgb, "data") : nullptr;
		if (AsString(Rgb ? Find(*Rgb, "encoding") : nullptr) != "raw" || !Data || Data->type != msgpack::type::BIN ||
			Data->via.bin.size != static_cast<uint32_t>(Width * Height * 3))
		{
			return;
		}
		FTexture2DMipMap& Mip = Texture->GetPlatformData()->Mips[0];
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
		Texture->UpdateResource();
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
	if (RigCameras.Num() == 0)
	{
		FrameTexture = UTexture2D::CreateTransient(Width, Height, PF_B8G8R8A8);
		FrameTexture->UpdateResource();
	}
	else
	{
		if (RequestType != TEXT("step"))
		{
			UE_LOG(LogTemp, Error, TEXT("worldweave: a rig steps (only Step takes a rig), not \"%s\""), *RequestType);
			SetComponentTickEnabled(false);
			return;
		}
		if (!FindRigCameras())
		{
			SetComponentTickEnabled(false);
			return;
		}
		RigTextures.Reset();
		for (const FWorldweaveRigCamera& Rig : RigCameras)
		{
			UTexture2D* Texture = UTexture2D::CreateTransient(Rig.Width, Rig.Height, PF_B8G8R8A8);
			Texture->UpdateResource();
			RigTextures.Add(Texture);
		}
	}
	SendHello();
}

bool UWorldweaveCameraComponent::FindRigCameras()
{
	TArray<UCameraComponent*> Owned;
	if (GetOwner())
	{
		GetOwner()->GetComponents<UCameraComponent>(Owned);
	}
	RigCameraComponents.Reset();
	for (int32 I = 0; I < RigCameras.Num(); ++I)
	{
		UCameraComponent* const* Found = Owned.FindByPredicate(
			[&](const UCameraComponent* Camera) { return Camera->GetFName() == RigCameras[I].Camera; });
		if (!Found)
		{
			UE_LOG(LogTemp, Error, TEXT("worldweave: RigCameras[%d]: the owner has no camera component named %s"), I,
				*RigCameras[I].Camera.ToString());
			return false;
		}
		RigCameraComponents.Add(*Found);
	}
	return true;
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

void UWorldweaveCameraComponent::ShowCanonical(const FVector& Location, const FRotator& Rotator)
{
	CanonicalPosition = WorldweaveUnreal::MetresPerUnit * Mul(WorldweaveUnreal::WorldToCanonical, Location);
	const FVector ForwardLocal = Mul(WorldweaveUnreal::OpenCvToCamera, FVector(0.0, 0.0, 1.0));
	CanonicalForward = Mul(WorldweaveUnreal::WorldToCanonical, Rotator.RotateVector(ForwardLocal));
}

void UWorldweaveCameraComponent::SendPose(const UCameraComponent& Camera)
{
	const FVector Location = Camera.GetComponentLocation();  // centimetres
	const FRotator Rotator = Camera.GetComponentRotation();  // degrees
	ShowCanonical(Location, Rotator);

	msgpack::sbuffer Buffer;
	Packer Pk(&Buffer);
	PackEnvelope(Pk, TCHAR_TO_UTF8(*RequestType), NextId++, 4);
	PackStr(Pk, "world_id");
	PackStr(Pk, WorldId);
	PackStr(Pk, "poses");
	Pk.pack_array(1);
	PackPose(Pk, Location, Rotator);
	PackStr(Pk, "intrinsics");
	PackIntrinsics(Pk, Width, Height, Camera.FieldOfView);
	PackStr(Pk, "format");
	PackRawFormat(Pk);
	Socket->send(zmq::buffer(Buffer.data(), Buffer.size()), zmq::send_flags::dontwait);
	bWaiting = true;
}

void UWorldweaveCameraComponent::SendRig(const AActor& Body)
{
	// The body is the actor, its pose sent as a camera's would be; every camera with its own intrinsics and mount,
	// read at one instant. No "intrinsics" at the top: each camera has its own.
	const FVector Location = Body.GetActorLocation();  // centimetres
	const FRotator Rotator = Body.GetActorRotation();  // degrees
	ShowCanonical(Location, Rotator);

	msgpack::sbuffer Buffer;
	Packer Pk(&Buffer);
	PackEnvelope(Pk, "step", NextId++, 4);
	PackStr(Pk, "world_id");
	PackStr(Pk, WorldId);
	PackStr(Pk, "poses");
	Pk.pack_array(1);
	PackPose(Pk, Location, Rotator);
	PackStr(Pk, "rig");
	Pk.pack_map(1);
	PackStr(Pk, "cameras");
	Pk.pack_array(static_cast<uint32_t>(RigCameras.Num()));
	for (int32 I = 0; I < RigCameras.Num(); ++I)
	{
		Pk.pack_map(2);
		PackStr(Pk, "intrinsics");
		PackIntrinsics(Pk, RigCameras[I].Width, RigCameras[I].Height, RigCameraComponents[I]->FieldOfView);
		PackStr(Pk, "mount");
		PackMount(Pk, Body, *RigCameraComponents[I]);
	}
	PackStr(Pk, "format");
	PackRawFormat(Pk);
	Socket->send(zmq::buffer(Buffer.data(), Buffer.size()), zmq::send_flags::dontwait);
	bWaiting = true;
}

bool UWorldweaveCameraComponent::HandleReply(const zmq::message_t& Message)
{
	msgpack::object_handle Handle;
	try
	{
		Handle = msgpack::unpack(static_cast<const char*>(Message.data()), Message.size());
	}
	catch (const msgpack::unpack_error& Error)
	{
		UE_LOG(LogTemp, Error, TEXT("worldweave gateway: unreadable reply (%s)"), UTF8_TO_TCHAR(Error.what()));
		return true;
	}
	const msgpack::object& Reply = Handle.get();
	const std::string Type = AsString(Find(Reply, "type"));
	const msgpack::object* Body = Find(Reply, "body");
	if (!Body)
	{
		return true;
	}
	if (Type == "error")
	{
		UE_LOG(LogTemp, Error, TEXT("worldweave gateway: %s: %s"), UTF8_TO_TCHAR(AsString(Find(*Body, "code")).c_str()),
			UTF8_TO_TCHAR(AsString(Find(*Body, "message")).c_str()));
		return true;
	}
	// "step_reply" (one per frame: per pose, with a rig per camera of each body pose) holds one frame, its
	// camera_index and last_in_request; "render_reply" a list of frames.
	const msgpack::object* Last = Find(*Body, "last_in_request");
	const bool bAnswered = Type != "step_reply" || (Last && Last->type == msgpack::type::BOOLEAN && Last->via.boolean);
	const msgpack::object* Frames = Find(*Body, "frames");
	const msgpack::object* FramePtr = Type == "step_reply" ? Find(*Body, "frame")
		: Type == "render_reply" && Frames && Frames->type == msgpack::type::ARRAY && Frames->via.array.size > 0
		? &Frames->via.array.ptr[0] : nullptr;
	if (!FramePtr)
	{
		return bAnswered;
	}
	const msgpack::object& Frame = *FramePtr;
	if (const msgpack::object* Coverage = Find(Frame, "coverage"))
	{
		LastCoverage = Coverage->type == msgpack::type::FLOAT64 || Coverage->type == msgpack::type::FLOAT32 ? Coverage->via.f64 : 0.0;
	}
	if (RigCameras.Num() == 0)
	{
		WriteFrame(Frame, FrameTexture, Width, Height);
		return bAnswered;
	}
	// A rig: the frame goes to its camera's texture.
	const msgpack::object* CameraIndex = Find(*Body, "camera_index");
	const uint64 Index = CameraIndex && CameraIndex->type == msgpack::type::POSITIVE_INTEGER ? CameraIndex->via.u64 : 0;
	if (Index < static_cast<uint64>(RigCameras.Num()))
	{
		const int32 I = static_cast<int32>(Index);
		WriteFrame(Frame, RigTextures[I], RigCameras[I].Width, RigCameras[I].Height);
	}
	return bAnswered;
}

void UWorldweaveCameraComponent::TickComponent(float DeltaTime, ELevelTick TickType, FActorComponentTickFunction* ThisTickFunction)
{
	Super::TickComponent(DeltaTime, TickType, ThisTickFunction);
	zmq::message_t Message;
	while (bWaiting && Socket->recv(Message, zmq::recv_flags::dontwait))
	{
		bWaiting = !HandleReply(Message);
	}
	if (bWaiting || !GetOwner())
	{
		return;
	}
	if (RigCameras.Num() > 0)
	{
		SendRig(*GetOwner());
	}
	else if (const UCameraComponent* Camera = GetOwner()->FindComponentByClass<UCameraComponent>())
	{
		SendPose(*Camera);
	}
}
